// Package webhook is the core of podid's mutating admission webhook: it
// injects into pods what EKS Pod Identity injects, so the AWS SDKs in the pod
// fetch credentials from the node agent.
//
// Three parts, each usable alone:
//
//   - Mutate and Patch are pure functions from (pod, Config) to the mutated
//     pod and its RFC 6902 JSON patch.
//   - AssociationIndex keeps the set of (namespace, service account) pairs of
//     one cluster that have an association, polled from podid server's EKS
//     ListPodIdentityAssociations API, so admission never waits on the network.
//   - NewHandler serves POST /mutate with admission.k8s.io/v1 AdmissionReviews.
//
// # What is injected
//
// Into every container and init container that sets neither variable and is
// not named in the pod annotation eks.amazonaws.com/skip-containers:
// AWS_CONTAINER_CREDENTIALS_FULL_URI, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
// and a read-only mount of the projected volume eks-pod-identity-token
// (a serviceAccountToken for audience pods.eks.amazonaws.com, path
// eks-pod-identity-token, about 24 h). A container that sets either variable
// is left alone entirely, as EKS does: the pod chose its own credentials.
//
// Decisions where EKS behaviour had to be chosen:
//
//   - A volume named eks-pod-identity-token that is already a pod identity
//     token (same audience and path, any expiration) is kept and containers
//     still get what they lack; any other volume of that name leaves the whole
//     pod unchanged (ErrVolumeConflict), as the EKS webhook does.
//   - A container that mounts another volume at the mount path is left
//     alone: a second mount there would make the API server reject the pod.
//   - The volume is only added when some container mounts it, so a pod whose
//     containers are all skipped is not changed at all.
//   - Windows pods (spec.os.name, or the kubernetes.io/os or
//     beta.kubernetes.io/os node selector set to windows) get the same
//     injection and the same credentials URI (the agent on Windows listens on
//     the same address); the token file variable is the drive path
//     C:\var\run\secrets\...\eks-pod-identity-token, as the EKS webhook does.
//   - hostNetwork pods are injected like any other: EKS injects them too,
//     and the agent's link-local address is on the node, so it is reachable
//     from the host network namespace. The agent authenticates the token, not
//     the caller's address.
//   - The token lifetime is shortened by a jitter derived from a hash of the
//     pod's namespace and name (generateName for controller-made pods), so
//     Mutate stays pure.
//
// # Which pods
//
// A pod is mutated on CREATE when its service account (default "default")
// has an association in the Index. Opting out:
//
//   - a pod label podid.io/inject: "false";
//   - a namespace label podid.io/inject: "false", enforced by the API server
//     through the MutatingWebhookConfiguration's namespaceSelector
//     (matchExpressions: key podid.io/inject, operator NotIn, values
//     ["false"]), since the webhook only sees the pod; the same objectSelector
//     on the pod label spares the call altogether.
//
// Until the index has loaded once, pods are admitted unmutated (with a
// warning to the user and result skipped_cold_cache): a webhook that blocks
// or denies pod creation while podid server is unreachable would take the
// cluster down with it. Run the webhook with failurePolicy: Ignore for the
// same reason.
package webhook
