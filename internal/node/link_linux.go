//go:build linux

package node

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureLink makes sure a dummy link named cfg.Name exists, carries the
// configured addresses and is up. It is idempotent so that the agent's init
// container can run on every pod start: a second run changes nothing.
// A dummy link is used (as the EKS Pod Identity Agent does) because it is
// always up, never forwards, and makes the addresses local to the host so
// that traffic from pods to them reaches host-network listeners. Kernels
// built without CONFIG_DUMMY (some micro-VMs) get an ifb link instead,
// which serves the same purpose.
func EnsureLink(cfg LinkConfig) error {
	return ensureLink(cfg, "dummy", "ifb")
}

// ensureLink creates the link with the first of kinds the kernel supports
// and accepts an existing link of any of them.
func ensureLink(cfg LinkConfig, kinds ...string) error {
	name, v4, v6, err := cfg.resolved()
	if err != nil {
		return err
	}
	// Check before creating anything so a host without IPv6 gets one clear
	// message instead of a half-configured link and an EACCES.
	if v6.IsValid() {
		if err := checkIPv6(procSysNet); err != nil {
			return err
		}
	}

	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		for i, kind := range kinds {
			err := netlink.LinkAdd(&netlink.GenericLink{LinkAttrs: attrs, LinkType: kind})
			if errors.Is(err, unix.EOPNOTSUPP) && i < len(kinds)-1 {
				continue // the kernel lacks this kind; try the next
			}
			if err != nil && !errors.Is(err, unix.EEXIST) {
				if errors.Is(err, unix.EOPNOTSUPP) {
					return fmt.Errorf("creating link %s: %w: the kernel supports none of the link kinds %v (CONFIG_DUMMY; try modprobe dummy)", name, err, kinds)
				}
				return opError("creating link "+name, err)
			}
			break
		}
		// Look it up again rather than trusting our struct: a concurrent
		// run may have won the race (EEXIST), and we need the index.
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("finding link %s after creating it: %w", name, err)
		}
	case err != nil:
		return opError("finding link "+name, err)
	}
	if !slices.Contains(kinds, link.Type()) {
		return fmt.Errorf("link %s already exists with type %q, not %q: remove it or choose another link name", name, link.Type(), kinds[0])
	}

	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return opError("listing addresses of link "+name, err)
	}
	for _, want := range []netip.Addr{v4, v6} {
		if !want.IsValid() || hasAddr(have, want) {
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.AsSlice(), Mask: net.CIDRMask(want.BitLen(), want.BitLen())}}
		if want.Is6() {
			// A tentative address (duplicate detection pending) cannot be
			// bound, and the agent binds right after init. Dummy links are
			// NOARP, which already skips detection; NODAD makes it so
			// regardless, as nothing else can own an address on this link.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			if want.Is6() && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EAFNOSUPPORT)) {
				return fmt.Errorf("adding %s to link %s: %w: IPv6 is disabled for this link or host; configure an empty IPv6 address to run IPv4-only", want, name, err)
			}
			return opError(fmt.Sprintf("adding %s to link %s", want, name), err)
		}
	}

	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return opError("bringing up link "+name, err)
		}
	}
	return nil
}

func hasAddr(have []netlink.Addr, want netip.Addr) bool {
	for _, a := range have {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == want {
			return true
		}
	}
	return false
}

// opError adds the capability hint to permission failures, which are by
// far the most common reason initialization fails.
func opError(op string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s: %w: %s", op, err, netAdminHint)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// procSysNet is where the caller's network namespace's sysctls live; for
// a hostNetwork pod that is the node's.
const procSysNet = "/proc/sys/net"

// checkIPv6 reports a host with IPv6 turned off, reading sysctls under dir
// (procSysNet outside tests).
func checkIPv6(dir string) error {
	const hint = "; configure an empty IPv6 address to run IPv4-only"
	b, err := os.ReadFile(filepath.Join(dir, "ipv6", "conf", "all", "disable_ipv6"))
	if errors.Is(err, os.ErrNotExist) {
		// Only conclude "no IPv6" when /proc/sys/net itself is readable;
		// a container without /proc tells us nothing.
		if _, err := os.Stat(dir); err == nil {
			return errors.New("this host has no IPv6 support (the kernel has no net.ipv6 sysctls)" + hint)
		}
		return nil
	}
	if err == nil && string(bytes.TrimSpace(b)) == "1" {
		return errors.New("IPv6 is disabled on this host (net.ipv6.conf.all.disable_ipv6=1)" + hint)
	}
	// On other read errors, not knowing is no reason to refuse: AddrAdd
	// will report the real problem.
	return nil
}
