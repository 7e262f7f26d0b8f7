// Package harness runs the real Kubernetes control plane for podid's
// end-to-end tests, without containers: etcd (Debian's etcd-server, installed
// with apt-get when missing and running as root) and kube-apiserver built
// from k8s.io/kubernetes by the ../tools module and cached by version under
// $XDG_CACHE_HOME/podid-e2e (or ~/.cache/podid-e2e). Each cluster gets its
// own CA, serving certificate, admin client certificate and service-account
// signing key, binds to loopback only, and is stopped with its whole process
// group when the test's cleanups run. It also runs podid's own binaries
// (server and agent) the way an operator would.
//
// The harness is Linux-only: it relies on process groups and Pdeathsig so
// nothing outlives a crashed test run.
package harness
