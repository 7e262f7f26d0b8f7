// Package node holds the node-level setup that `podid agent` performs on
// each Kubernetes node: the link-local addresses the AWS SDKs expect the
// EKS Pod Identity Agent on, binding listeners on them, and removing the
// "agent not ready" node taint once the agent serves.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
)

// Defaults match the EKS Pod Identity Agent, because the AWS SDKs inside
// pods have AWS_CONTAINER_CREDENTIALS_FULL_URI pointing at these addresses
// and podid must be a drop-in replacement.
const (
	DefaultLinkName = "pod-id-link0"
	DefaultIPv4     = "169.254.170.23"
	DefaultIPv6     = "fd00:ec2::23"
)

// netAdminHint is appended to permission errors: the usual cause is a pod
// spec without the capability, and the fix belongs in the manifest.
const netAdminHint = "podid agent initialize needs the NET_ADMIN capability (hostNetwork pod with securityContext.capabilities.add: [NET_ADMIN])"

// LinkConfig describes the host-local link that carries the agent's
// addresses. The zero value means the EKS defaults.
type LinkConfig struct {
	// Name is the link name; "" means DefaultLinkName.
	Name string
	// IPv4 is assigned as a /32; "" means DefaultIPv4.
	IPv4 string
	// IPv6 is assigned as a /128; "" disables IPv6 (for hosts without it).
	// Use LinkConfig{IPv6: DefaultIPv6} or DefaultLinkConfig for dual stack.
	IPv6 string
}

// DefaultLinkConfig returns the dual-stack EKS defaults. It exists because
// the zero LinkConfig cannot tell "IPv6 unset" from "IPv6 disabled".
func DefaultLinkConfig() LinkConfig {
	return LinkConfig{Name: DefaultLinkName, IPv4: DefaultIPv4, IPv6: DefaultIPv6}
}

// resolved fills defaults and validates, so the netlink code only sees
// well-formed input.
func (c LinkConfig) resolved() (name string, v4, v6 netip.Addr, err error) {
	name = c.Name
	if name == "" {
		name = DefaultLinkName
	}
	// IFNAMSIZ is 16 including the NUL; the kernel's EINVAL would not say so.
	if len(name) > 15 {
		return "", v4, v6, fmt.Errorf("link name %q is longer than 15 bytes", name)
	}
	s4 := c.IPv4
	if s4 == "" {
		s4 = DefaultIPv4
	}
	v4, err = netip.ParseAddr(s4)
	if err != nil || !v4.Is4() {
		return "", v4, v6, fmt.Errorf("link IPv4 address %q is not an IPv4 address", s4)
	}
	if c.IPv6 != "" {
		v6, err = netip.ParseAddr(c.IPv6)
		if err != nil || !v6.Is6() || v6.Is4In6() {
			return "", v4, v6, fmt.Errorf("link IPv6 address %q is not an IPv6 address", c.IPv6)
		}
	}
	return name, v4, v6, nil
}

// Listen binds a TCP listener on each address at port. It is all or
// nothing: on failure it closes what it already opened, so a caller that
// retries or exits does not leak half a server. Errors name the address
// and carry a hint for the failures operators actually hit.
func Listen(ctx context.Context, addrs []string, port int) ([]net.Listener, error) {
	var lc net.ListenConfig
	ls := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		hostport := net.JoinHostPort(a, strconv.Itoa(port))
		l, err := lc.Listen(ctx, "tcp", hostport)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, listenError(hostport, port, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func listenError(hostport string, port int, err error) error {
	var hint string
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "address not on this host: run `podid agent initialize` first"
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "another process (the EKS Pod Identity Agent?) already listens there"
	case errors.Is(err, syscall.EACCES) && port < 1024:
		hint = "binding port <1024 needs root or CAP_NET_BIND_SERVICE"
	default:
		return fmt.Errorf("listening on %s: %w", hostport, err)
	}
	return fmt.Errorf("listening on %s: %w: %s", hostport, err, hint)
}
