//go:build linux

package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/podid/podid/internal/node/nodetest"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkState is what a second EnsureLink must leave untouched.
type linkState struct {
	Index int
	Type  string
	Up    bool
	Addrs []string
}

func stateOf(t *testing.T, name string) linkState {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	s := linkState{Index: l.Attrs().Index, Type: l.Type(), Up: l.Attrs().Flags&net.FlagUp != 0}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue // the kernel's own fe80:: address
		}
		s.Addrs = append(s.Addrs, a.IPNet.String())
	}
	slices.Sort(s.Addrs)
	return s
}

func TestEnsureLink(t *testing.T) {
	if !nodetest.Isolated(t, false) {
		return
	}
	nodetest.LoopbackUp(t)
	kind := linkKind(t)
	cfg := DefaultLinkConfig()

	if err := ensureLink(cfg, kind); err != nil {
		t.Fatalf("first run: %v", err)
	}
	first := stateOf(t, DefaultLinkName)
	want := linkState{Index: first.Index, Type: kind, Up: true, Addrs: []string{"169.254.170.23/32", "fd00:ec2::23/128"}}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("after first run (-want +got):\n%s", diff)
	}

	if err := ensureLink(cfg, kind); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if diff := cmp.Diff(first, stateOf(t, DefaultLinkName)); diff != "" {
		t.Errorf("second run changed the link (-before +after):\n%s", diff)
	}

	// The addresses must be usable immediately (no IPv6 DAD delay): this
	// is what the agent does right after initialization.
	ctx := context.Background()
	ls, err := Listen(ctx, []string{DefaultIPv4, DefaultIPv6}, 80)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		roundTrip(t, l)
		l.Close()
	}

	// Repair: a link someone downed and stripped is fixed, not recreated.
	l, err := netlink.LinkByName(DefaultLinkName)
	if err != nil {
		t.Fatal(err)
	}
	v4, _ := netlink.ParseAddr("169.254.170.23/32")
	if err := netlink.AddrDel(l, v4); err != nil {
		t.Fatal(err)
	}
	// Downing the link also makes the kernel drop its IPv6 addresses.
	if err := netlink.LinkSetDown(l); err != nil {
		t.Fatal(err)
	}
	if err := ensureLink(cfg, kind); err != nil {
		t.Fatalf("repair run: %v", err)
	}
	if diff := cmp.Diff(first, stateOf(t, DefaultLinkName)); diff != "" {
		t.Errorf("repair run (-want +got):\n%s", diff)
	}

	// IPv4 only, other name and address: IPv6 is left alone.
	other := LinkConfig{Name: "podid-other0", IPv4: "169.254.170.99"}
	if err := ensureLink(other, kind); err != nil {
		t.Fatal(err)
	}
	wantOther := linkState{Type: kind, Up: true, Addrs: []string{"169.254.170.99/32"}}
	got := stateOf(t, "podid-other0")
	got.Index = 0
	if diff := cmp.Diff(wantOther, got); diff != "" {
		t.Errorf("IPv4-only link (-want +got):\n%s", diff)
	}
}

// roundTrip connects to l and checks a byte comes back, proving the
// address is local and reachable, not just bindable.
func roundTrip(t *testing.T, l net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, io.LimitReader(c, 1))
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dial %s: %v", l.Addr(), err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("echo from %s: %q, %v", l.Addr(), b, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestEnsureLinkRealKind(t *testing.T) {
	if !nodetest.Isolated(t, false) {
		return
	}
	kind := linkKind(t)
	if err := EnsureLink(DefaultLinkConfig()); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(t, DefaultLinkName); got.Type != kind || !got.Up || len(got.Addrs) != 2 {
		t.Errorf("EnsureLink made %+v, want an up %s link with two addresses", got, kind)
	}
	if err := EnsureLink(DefaultLinkConfig()); err != nil {
		t.Errorf("second run: %v", err)
	}
}

func TestEnsureLinkWrongType(t *testing.T) {
	if !nodetest.Isolated(t, false) {
		return
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = DefaultLinkName
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	err := ensureLink(DefaultLinkConfig(), linkKind(t))
	if err == nil || !strings.Contains(err.Error(), DefaultLinkName) || !strings.Contains(err.Error(), `"bridge"`) {
		t.Fatalf("got %v, want an error naming %s and its type bridge", err, DefaultLinkName)
	}
}

func TestEnsureLinkIPv6Disabled(t *testing.T) {
	if !nodetest.Isolated(t, false) {
		return
	}
	kind := linkKind(t)
	// /proc/sys/net is per network namespace, so this does not touch the host.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/all/disable_ipv6", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	err := ensureLink(DefaultLinkConfig(), kind)
	if err == nil || !strings.Contains(err.Error(), "IPv6 is disabled") {
		t.Fatalf("got %v, want an IPv6-disabled error", err)
	}
	var notFound netlink.LinkNotFoundError
	if _, err := netlink.LinkByName(DefaultLinkName); !errors.As(err, &notFound) {
		t.Errorf("link was created before the IPv6 check failed (lookup: %v)", err)
	}
	if err := ensureLink(LinkConfig{}, kind); err != nil {
		t.Errorf("IPv4-only config on an IPv6-less host: %v", err)
	}
}

// TestUnprivileged runs as nobody in its own namespace: the errors an agent
// pod without NET_ADMIN or root would see.
func TestUnprivileged(t *testing.T) {
	if !nodetest.Isolated(t, true) {
		return
	}
	if os.Geteuid() == 0 {
		t.Fatal("isolated child still runs as root")
	}
	t.Run("EnsureLink needs NET_ADMIN", func(t *testing.T) {
		err := EnsureLink(DefaultLinkConfig())
		if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "NET_ADMIN") || !strings.Contains(err.Error(), DefaultLinkName) {
			t.Fatalf("got %v, want EPERM naming the link and NET_ADMIN", err)
		}
	})
	t.Run("Listen on a low port", func(t *testing.T) {
		_, err := Listen(context.Background(), []string{"0.0.0.0"}, 80)
		if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") {
			t.Fatalf("got %v, want EACCES with a CAP_NET_BIND_SERVICE hint", err)
		}
	})
}

func TestListenErrors(t *testing.T) {
	ctx := context.Background()

	t.Run("address not on host", func(t *testing.T) {
		// 192.0.2.1 is TEST-NET-1, never assigned to a real host.
		_, err := Listen(ctx, []string{"192.0.2.1"}, 0)
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "podid agent initialize") || !strings.Contains(err.Error(), "192.0.2.1") {
			t.Fatalf("got %v, want EADDRNOTAVAIL naming the address with an initialize hint", err)
		}
	})

	t.Run("address in use", func(t *testing.T) {
		ls, err := Listen(ctx, []string{"127.0.0.1"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer ls[0].Close()
		port := ls[0].Addr().(*net.TCPAddr).Port
		_, err = Listen(ctx, []string{"127.0.0.1"}, port)
		if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "EKS Pod Identity Agent") {
			t.Fatalf("got %v, want EADDRINUSE with a hint", err)
		}
	})

	t.Run("failure closes earlier listeners", func(t *testing.T) {
		ls, err := Listen(ctx, []string{"127.0.0.1"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		port := ls[0].Addr().(*net.TCPAddr).Port
		ls[0].Close()
		if _, err := Listen(ctx, []string{"127.0.0.1", "192.0.2.1"}, port); err == nil {
			t.Fatal("Listen succeeded on an address not on this host")
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("127.0.0.1:%d still bound after a failed Listen: %v", port, err)
		}
		l.Close()
	})
}

func TestLinkConfigResolved(t *testing.T) {
	tests := []struct {
		name    string
		cfg     LinkConfig
		wantErr string
		want    string
	}{
		{name: "zero is IPv4-only default", cfg: LinkConfig{}, want: "pod-id-link0 169.254.170.23 invalid IP"},
		{name: "defaults", cfg: DefaultLinkConfig(), want: "pod-id-link0 169.254.170.23 fd00:ec2::23"},
		{name: "long name", cfg: LinkConfig{Name: "a-very-long-link-name"}, wantErr: "longer than 15"},
		{name: "v6 as v4", cfg: LinkConfig{IPv4: "fd00::1"}, wantErr: `"fd00::1" is not an IPv4`},
		{name: "garbage v4", cfg: LinkConfig{IPv4: "nope"}, wantErr: "not an IPv4"},
		{name: "v4 as v6", cfg: LinkConfig{IPv6: "10.0.0.1"}, wantErr: "not an IPv6"},
		{name: "mapped v4 as v6", cfg: LinkConfig{IPv6: "::ffff:10.0.0.1"}, wantErr: "not an IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, v4, v6, err := tt.cfg.resolved()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%s %s %s", name, v4, v6); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckIPv6(t *testing.T) {
	write := func(t *testing.T, dir, val string) {
		p := filepath.Join(dir, "ipv6", "conf", "all")
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "disable_ipv6"), []byte(val), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr string
	}{
		{name: "enabled", setup: func(t *testing.T, dir string) { write(t, dir, "0\n") }},
		{name: "disabled", setup: func(t *testing.T, dir string) { write(t, dir, "1\n") }, wantErr: "disable_ipv6=1"},
		{name: "no IPv6 in kernel", setup: func(*testing.T, string) {}, wantErr: "no IPv6 support"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			err := checkIPv6(dir)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	t.Run("no /proc", func(t *testing.T) {
		if err := checkIPv6(filepath.Join(t.TempDir(), "missing")); err != nil {
			t.Errorf("unknown state should not refuse: %v", err)
		}
	})
}
