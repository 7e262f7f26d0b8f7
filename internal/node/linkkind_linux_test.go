//go:build linux

package node

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkKind returns the link kind to test with: "dummy", as in production,
// unless the kernel lacks it (some micro-VMs do, CI's among them), in which
// case "ifb", EnsureLink's own fallback, stands in.
func linkKind(t *testing.T) string {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "podid-probe0"
	err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	switch {
	case err == nil:
		if err := netlink.LinkDel(&netlink.Dummy{LinkAttrs: attrs}); err != nil {
			t.Fatal(err)
		}
		return "dummy"
	case errors.Is(err, unix.EOPNOTSUPP):
		t.Logf("kernel has no dummy links (%v); testing with ifb links instead", err)
		return "ifb"
	default:
		t.Fatalf("probing dummy link support: %v", err)
		return ""
	}
}
