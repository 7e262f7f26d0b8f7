package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// Goals from the issue "podid agent", Performance section.
const (
	goalThroughput = 0.8              // agent requests/s ≥ 0.8 × bare
	goalP99        = 1.5              // agent p99 ≤ 1.5 × bare
	goalRSSKiB     = 30 << 10         // agent RSS with the cache full ≤ 30 MiB
	mib            = float64(1 << 10) // KiB per MiB
)

type report struct {
	opts       options
	machine    string
	loadBefore string
	loadAfter  string
	started    time.Time
	elapsed    time.Duration
	bodySize   int

	rssIdle, rssWarm, rssAfter, bareRSS memory
	cacheEntries                        float64
	// heapWarm and heapAfter are the agent's Go heap in use, in bytes.
	heapWarm, heapAfter              float64
	hitsDuringLoad, missesDuringLoad float64

	runs []result
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// write prints the markdown to paste into docs/benchmarks.md.
func (r *report) write(w io.Writer) {
	o := r.opts
	fmt.Fprintf(w, "Machine: %s; load average %s before, %s after.\n", r.machine, r.loadBefore, r.loadAfter)
	fmt.Fprintf(w, "Run: %s, %s in all; %d cached tokens, %d keep-alive clients, %d × (%s agent, %s bare) after %s unrecorded each; response body %d bytes.\n\n",
		r.started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Round(time.Second), o.tokens, o.conns, o.rounds, o.duration, o.duration, o.warm, r.bodySize)

	fmt.Fprintln(w, "| run | target | requests/s | p50 | p90 | p99 | p99.9 | max | errors | target CPU/request | CPU: target / load generator / other processes |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	pct := func(d, of time.Duration) float64 { return 100 * d.Seconds() / of.Seconds() }
	row := func(name string, res result) {
		fmt.Fprintf(w, "| %s | %s | %.0f | %s | %s | %s | %s | %s | %d | %.1f µs | %.0f%% / %.0f%% / %.0f%% |\n", name, res.target, res.rps(),
			ms(percentile(res.lat, 50)), ms(percentile(res.lat, 90)), ms(percentile(res.lat, 99)), ms(percentile(res.lat, 99.9)), ms(percentile(res.lat, 100)), res.errors,
			float64(res.cpuPerRequest())/float64(time.Microsecond), pct(res.serverCPU, res.elapsed), pct(res.clientCPU, res.elapsed), pct(res.otherCPU, res.elapsed))
	}
	for _, res := range r.runs {
		row(fmt.Sprint(res.round), res)
	}
	agent, bare := merge(r.runs, "agent"), merge(r.runs, "bare")
	row("all", agent)
	row("all", bare)

	fmt.Fprintln(w)
	fmt.Fprintln(w, "| round | agent / bare requests/s | agent / bare p99 | agent / bare CPU per request |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	var busy []string
	for round := 1; round <= o.rounds; round++ {
		var a, b result
		for _, res := range r.runs {
			if res.round != round {
				continue
			}
			if res.target == "agent" {
				a = res
			} else {
				b = res
			}
			// More than a tenth of the machine went elsewhere.
			if res.otherCPU.Seconds() > 0.1*float64(runtime.NumCPU())*res.elapsed.Seconds() {
				busy = append(busy, fmt.Sprintf("%d/%s", round, res.target))
			}
		}
		fmt.Fprintf(w, "| %d | %.2f× | %.2f× | %.2f× |\n", round, a.rps()/b.rps(),
			float64(percentile(a.lat, 99))/float64(percentile(b.lat, 99)), float64(a.cpuPerRequest())/float64(b.cpuPerRequest()))
	}

	tput := agent.rps() / bare.rps()
	p99 := float64(percentile(agent.lat, 99)) / float64(percentile(bare.lat, 99))
	rssMiB := float64(r.rssWarm.RSS) / mib
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| goal | measured | |")
	fmt.Fprintln(w, "|---|---:|---|")
	fmt.Fprintf(w, "| agent throughput ≥ %.1f× bare | %.2f× | %s |\n", goalThroughput, tput, met(tput >= goalThroughput))
	fmt.Fprintf(w, "| agent p99 ≤ %.1f× bare | %.2f× | %s |\n", goalP99, p99, met(p99 <= goalP99))
	fmt.Fprintf(w, "| agent RSS with %.0f cached entries ≤ %d MiB | %.1f MiB | %s |\n", r.cacheEntries, goalRSSKiB>>10, rssMiB, met(r.rssWarm.RSS > 0 && r.rssWarm.RSS <= goalRSSKiB))

	fmt.Fprintln(w)
	fmt.Fprintln(w, "| process | VmRSS | of which anonymous / file-backed | VmHWM (peak) | Go heap in use |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	mem := func(name string, m memory, heap float64) {
		h := "–"
		if heap > 0 {
			h = fmt.Sprintf("%.1f MiB", heap/(1<<20))
		}
		fmt.Fprintf(w, "| %s | %.1f MiB | %.1f / %.1f MiB | %.1f MiB | %s |\n", name, float64(m.RSS)/mib, float64(m.Anon)/mib, float64(m.File)/mib, float64(m.HWM)/mib, h)
	}
	mem("agent, started, cache empty", r.rssIdle, 0)
	mem(fmt.Sprintf("agent, %.0f entries cached", r.cacheEntries), r.rssWarm, r.heapWarm)
	mem("agent, after the load", r.rssAfter, r.heapAfter)
	mem("bare handler, after the load", r.bareRSS, 0)

	fmt.Fprintf(w, "\nAgent cache during the load runs (unrecorded warm-ups included): %.0f hits, %.0f misses.\n", r.hitsDuringLoad, r.missesDuringLoad)
	var notes []string
	if r.missesDuringLoad > 0 {
		notes = append(notes, "some requests missed the cache, so the agent numbers include server calls")
	}
	if agent.errors+bare.errors > 0 {
		notes = append(notes, fmt.Sprintf("requests failed (first: agent %q, bare %q)", agent.firstErr, bare.firstErr))
	}
	if len(busy) > 0 {
		notes = append(notes, "other processes used more than 10% of the machine during run "+strings.Join(busy, ", ")+": those rounds are noisy")
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nWARNING: %s.\n", strings.Join(notes, "; "))
	}
}
