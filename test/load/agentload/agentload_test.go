package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentile(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one", ms(7), 50, 7 * time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p99.9 of 100 is the max", ms(hundred...), 99.9, 100 * time.Millisecond},
		{"p100", ms(1, 2, 3), 100, 3 * time.Millisecond},
		{"tiny p is the min", ms(1, 2, 3), 0.01, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestMergeAndRates(t *testing.T) {
	runs := []result{
		{target: "agent", elapsed: time.Second, lat: []time.Duration{3, 1}, errors: 1, firstErr: "boom", serverCPU: 4 * time.Microsecond},
		{target: "bare", elapsed: time.Second, lat: []time.Duration{5}},
		{target: "agent", elapsed: time.Second, lat: []time.Duration{2, 4}, serverCPU: 4 * time.Microsecond},
	}
	got := merge(runs, "agent")
	want := result{target: "agent", elapsed: 2 * time.Second, lat: []time.Duration{1, 2, 3, 4}, errors: 1, firstErr: "boom", serverCPU: 8 * time.Microsecond}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(result{})); diff != "" {
		t.Errorf("merge (-want +got):\n%s", diff)
	}
	if got.rps() != 2 {
		t.Errorf("rps = %v, want 2", got.rps())
	}
	if got.cpuPerRequest() != 2*time.Microsecond {
		t.Errorf("cpuPerRequest = %v, want 2µs", got.cpuPerRequest())
	}
	if (result{}).rps() != 0 || (result{}).cpuPerRequest() != 0 {
		t.Error("an empty result must give zero rates, not NaN or a panic")
	}
}

func TestParseProcStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    memory
		wantErr bool
	}{
		{
			name: "linux",
			in:   "Name:\tpodid\nVmPeak:\t 1265672 kB\nVmHWM:\t   31616 kB\nVmRSS:\t   29452 kB\nRssAnon:\t   17000 kB\nRssFile:\t   12452 kB\nRssShmem:\t       0 kB\nThreads:\t8\n",
			want: memory{RSS: 29452, HWM: 31616, Anon: 17000, File: 12452},
		},
		{name: "without the split", in: "VmHWM:\t 10 kB\nVmRSS:\t 9 kB\n", want: memory{RSS: 9, HWM: 10}},
		{name: "missing RSS", in: "VmHWM:\t 10 kB\n", wantErr: true},
		{name: "odd unit", in: "VmHWM:\t 10 kB\nVmRSS:\t 10 MB\n", wantErr: true},
		{name: "not a number", in: "VmHWM:\t 10 kB\nVmRSS:\t ten kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStatus(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	// utime 250 and stime 50 ticks; the command name holds ") (" to check
	// that parsing starts after the last parenthesis.
	stat := "4242 (pod id) (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 8 0 100 1000000 5000 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "4242 no-paren S 1", "4242 (podid) S 1 2 3", "4242 (podid) S 1 4242 4242 0 -1 0 0 0 0 0 x 50"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q) gave no error", bad)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP podid_agent_cache_hits_total Requests answered from the cache.
# TYPE podid_agent_cache_hits_total counter
podid_agent_cache_hits_total 1234
podid_agent_requests_total{code="200"} 10
podid_agent_requests_total{code="400"} 2
podid_agent_cache_entries 2000
weird{le="a b}c"} 1.5e+00
`
	got, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"podid_agent_cache_hits_total": 1234,
		"podid_agent_requests_total":   12,
		"podid_agent_cache_entries":    2000,
		"weird":                        1.5,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"name_only\n", "x{a=\"1\" 3\n", "x notanumber\n"} {
		if _, err := parseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMetrics(%q) gave no error", bad)
		}
	}
}

func TestParseBusyCPU(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	got, err := parseBusyCPU("cpu  100 20 30 5000 40 5 5 0 70 7")
	if err != nil {
		t.Fatal(err)
	}
	if want := 160 * time.Second / clockTicks; got != want {
		t.Errorf("got %v, want %v (idle, iowait and guest left out)", got, want)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5", "cpu 1 2", "cpu 1 2 x 4 5 6"} {
		if _, err := parseBusyCPU(bad); err == nil {
			t.Errorf("parseBusyCPU(%q) gave no error", bad)
		}
	}
}
