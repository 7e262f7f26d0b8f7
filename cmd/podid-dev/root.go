package main

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/spf13/cobra"
)

// deps are what the commands take from the outside world, so tests can pin
// the clock and the token ID.
type deps struct {
	now     func() time.Time
	newUUID func() string
}

// NewRootCmd builds the podid-dev command tree.
func NewRootCmd() *cobra.Command {
	return newRootCmd(deps{now: time.Now, newUUID: newUUID})
}

func newRootCmd(d deps) *cobra.Command {
	root := &cobra.Command{
		Use:   "podid-dev",
		Short: "Try podid locally: a fake AWS STS and Kubernetes-shaped pod tokens",
		Long: `podid-dev runs the pieces podid server talks to, so it can be tried on one
machine without an AWS account or a Kubernetes cluster:

  podid-dev sts     a fake AWS STS that issues throwaway credentials
  podid-dev token   a signing key, its JWKS and pod tokens shaped exactly
                    like kube-apiserver's projected service-account tokens

Nothing it makes is usable against real AWS.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newSTSCmd(), newTokenCmd(d))
	return root
}

// newUUID returns a random (version 4) UUID, the form Kubernetes uses for
// object UIDs and token IDs.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
