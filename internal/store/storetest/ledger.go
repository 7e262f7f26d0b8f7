package storetest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/podid/podid/internal/identity"
)

// testLedger pages the audit ledger while two Stores append to it, as
// several podid replicas do.
func testLedger(t *testing.T, h *harness) {
	ctx := t.Context()
	a, b := h.open(), h.open()
	stores := []identity.Store{a, b}

	event := func(i int) identity.AuditEvent {
		return identity.AuditEvent{
			Time:           base.Add(time.Duration(i) * time.Second),
			Cluster:        []string{"prod", "dev", "prod"}[i%3],
			Namespace:      "ns",
			ServiceAccount: fmt.Sprintf("sa-%d", i),
			Outcome:        identity.OutcomeIssued,
			Message:        fmt.Sprintf("event %d", i),
		}
	}

	// Concurrent appends through both stores get distinct IDs.
	const n = 40
	appended := make([]identity.AuditEvent, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			appended[i] = event(i)
			errs[i] = stores[i%2].AppendAudit(ctx, &appended[i])
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i, err := range errs {
		must(t, fmt.Sprintf("concurrent AppendAudit %d", i), err)
		id := appended[i].ID
		if id <= 0 || seen[id] {
			t.Errorf("concurrent AppendAudit %d got ID %d, want a positive ID no other event has", i, id)
		}
		seen[id] = true
	}

	// Alternating appends through the two stores keep increasing.
	last := slices.Max(slices.Collect(func(yield func(int64) bool) {
		for _, e := range appended {
			if !yield(e.ID) {
				return
			}
		}
	}))
	for i := n; i < n+10; i++ {
		e := event(i)
		must(t, "AppendAudit", stores[i%2].AppendAudit(ctx, &e))
		if e.ID <= last {
			t.Errorf("AppendAudit through store %d set ID %d after %d; IDs must increase across stores", i%2, e.ID, last)
		}
		last = e.ID
		appended = append(appended, e)
	}
	// A large message with awkward characters survives.
	big := event(n + 10)
	big.Message = strings.Repeat("x", 64<<10) + " ünïcødé 値 'quotes' \"double\" \\ \n\t"
	must(t, "AppendAudit of a large message", a.AppendAudit(ctx, &big))
	appended = append(appended, big)

	byIDDesc := slices.Clone(appended)
	slices.SortFunc(byIDDesc, func(x, y identity.AuditEvent) int { return int(y.ID - x.ID) })

	for i, s := range stores {
		got, err := s.ListAudit(ctx, identity.AuditFilter{})
		must(t, "ListAudit", err)
		if diff := cmp.Diff(byIDDesc, got, opts); diff != "" {
			t.Errorf("ListAudit through store %d (-want +got):\n%s", i, diff)
		}
	}

	// Paging is stable while events keep arriving: they get larger IDs, so
	// they never show up in the pages after the first, and no event is
	// skipped or repeated.
	first, err := a.ListAudit(ctx, identity.AuditFilter{Limit: 7})
	must(t, "ListAudit first page", err)
	paged := slices.Clone(first)
	var later []identity.AuditEvent
	for i := range 5 {
		e := event(100 + i)
		must(t, "AppendAudit while paging", b.AppendAudit(ctx, &e))
		later = append(later, e)
	}
	f := identity.AuditFilter{Limit: 7, BeforeID: first[len(first)-1].ID}
	for page := 0; ; page++ {
		if page > len(byIDDesc) {
			t.Fatal("paging does not end")
		}
		list, err := stores[page%2].ListAudit(ctx, f)
		must(t, "ListAudit page", err)
		if len(list) > f.Limit {
			t.Fatalf("page of %d events exceeds limit %d", len(list), f.Limit)
		}
		if len(list) == 0 {
			break
		}
		paged = append(paged, list...)
		f.BeforeID = list[len(list)-1].ID
	}
	if diff := cmp.Diff(byIDDesc, paged, opts); diff != "" {
		t.Errorf("ledger paged while appending (-want +got):\n%s", diff)
	}

	newest, oldest := byIDDesc[0].ID, byIDDesc[len(byIDDesc)-1].ID
	count := func(f identity.AuditFilter) int {
		t.Helper()
		list, err := a.ListAudit(ctx, f)
		must(t, fmt.Sprintf("ListAudit(%+v)", f), err)
		for i := 1; i < len(list); i++ {
			if list[i].ID >= list[i-1].ID {
				t.Errorf("ListAudit(%+v) is not newest first: ID %d follows %d", f, list[i].ID, list[i-1].ID)
			}
		}
		return len(list)
	}
	tests := []struct {
		f    identity.AuditFilter
		want int
	}{
		{identity.AuditFilter{BeforeID: oldest}, 0},
		{identity.AuditFilter{BeforeID: oldest + 1}, 1},
		{identity.AuditFilter{BeforeID: newest + 1, Limit: len(byIDDesc) + 100}, len(byIDDesc)},
		{identity.AuditFilter{Limit: 1}, 1},
		{identity.AuditFilter{Limit: -1}, len(byIDDesc) + 5},
		{identity.AuditFilter{BeforeID: -5}, len(byIDDesc) + 5},
		{identity.AuditFilter{Cluster: "dev", BeforeID: oldest}, 0},
	}
	for _, tt := range tests {
		if got := count(tt.f); got != tt.want {
			t.Errorf("ListAudit(%+v) returned %d events, want %d", tt.f, got, tt.want)
		}
	}
	dev := 0
	for _, e := range append(later, byIDDesc...) {
		if e.Cluster == "dev" {
			dev++
		}
	}
	if got := count(identity.AuditFilter{Cluster: "dev"}); got != dev {
		t.Errorf("ListAudit of dev returned %d events, want %d", got, dev)
	}
}
