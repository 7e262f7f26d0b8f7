package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"
)

// result is one measured run against one target.
type result struct {
	target  string
	round   int
	elapsed time.Duration
	// lat holds every successful request's latency, sorted.
	lat    []time.Duration
	errors int
	// firstErr describes the first failure, if any.
	firstErr string
	// serverCPU and clientCPU are the CPU time the target process and this
	// one used in the recorded window; zero where /proc is missing.
	serverCPU, clientCPU time.Duration
	// otherCPU is what the rest of the machine used meanwhile: the noise.
	otherCPU time.Duration
}

// cpuPerRequest is the target's CPU time per answered request.
func (r result) cpuPerRequest() time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.serverCPU / time.Duration(len(r.lat))
}

func (r result) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.lat)) / r.elapsed.Seconds()
}

// newTransport keeps one connection per client and never leaves loopback.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
}

// drive runs conns closed-loop keep-alive clients against url, cycling over
// tokens: first for warm unrecorded, then for d recorded. A request that
// starts inside the recorded window counts, and the window ends when the
// last of them is answered.
func drive(ctx context.Context, url string, pid int, tokens []string, conns int, warm, d time.Duration) (result, error) {
	if len(tokens) == 0 {
		return result{}, errors.New("no tokens")
	}
	tr := newTransport(conns)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	start := time.Now()
	recordFrom := start.Add(warm)
	stopAt := recordFrom.Add(d)
	perClient := make([][]time.Duration, conns)
	errs := make([]int, conns)
	firstErr := make([]string, conns)
	var wg sync.WaitGroup
	var cpuStart [3]time.Duration
	cpuRead := make(chan struct{})
	go func() {
		defer close(cpuRead)
		select {
		case <-time.After(time.Until(recordFrom)):
		case <-ctx.Done():
			return
		}
		cpuStart[0], _ = readCPU(pid)
		cpuStart[1], _ = readCPU(os.Getpid())
		cpuStart[2], _ = readBusyCPU()
	}()
	for c := range conns {
		wg.Go(func() {
			// Spread the clients over the tokens so they do not march in step.
			i := c * len(tokens) / conns
			lat := make([]time.Duration, 0, 1<<16)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(stopAt) {
					break
				}
				status, n, err := request(ctx, client, url, tokens[i])
				t1 := time.Now()
				i = (i + 1) % len(tokens)
				if t0.Before(recordFrom) {
					continue
				}
				if err == nil && (status != http.StatusOK || n == 0) {
					err = fmt.Errorf("status %d, %d body bytes", status, n)
				}
				if err != nil {
					if errs[c] == 0 {
						firstErr[c] = err.Error()
					}
					errs[c]++
					continue
				}
				lat = append(lat, t1.Sub(t0))
			}
			perClient[c] = lat
		})
	}
	wg.Wait()
	elapsed := time.Since(recordFrom)
	serverCPU, serr := readCPU(pid)
	clientCPU, cerr := readCPU(os.Getpid())
	busyCPU, berr := readBusyCPU()
	<-cpuRead
	if err := ctx.Err(); err != nil {
		return result{}, err
	}
	res := result{elapsed: elapsed}
	if serr == nil && cerr == nil && cpuStart[0] > 0 {
		res.serverCPU, res.clientCPU = serverCPU-cpuStart[0], clientCPU-cpuStart[1]
		if berr == nil && cpuStart[2] > 0 {
			res.otherCPU = max(busyCPU-cpuStart[2]-res.serverCPU-res.clientCPU, 0)
		}
	}
	for c := range conns {
		res.lat = append(res.lat, perClient[c]...)
		res.errors += errs[c]
		if res.firstErr == "" {
			res.firstErr = firstErr[c]
		}
	}
	slices.Sort(res.lat)
	return res, nil
}

// request does one GET as the AWS SDKs do and reads the whole body, so the
// connection goes back to the pool.
func request(ctx context.Context, client *http.Client, url, tok string) (status int, n int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Host = podHost
	req.Header.Set("Authorization", tok)
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	n, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, n, err
}

// percentile is the nearest-rank percentile (0 < p <= 100) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// merge pools the runs of one target.
func merge(runs []result, target string) result {
	out := result{target: target}
	for _, r := range runs {
		if r.target != target {
			continue
		}
		out.lat = append(out.lat, r.lat...)
		out.elapsed += r.elapsed
		out.errors += r.errors
		out.serverCPU += r.serverCPU
		out.clientCPU += r.clientCPU
		out.otherCPU += r.otherCPU
		if out.firstErr == "" {
			out.firstErr = r.firstErr
		}
	}
	slices.Sort(out.lat)
	return out
}

// waitQuiet waits up to limit for a 2-second window in which the whole
// machine is less than 10% busy, so a measured run does not start in the
// middle of someone else's burst. It reports whether it found one.
func waitQuiet(ctx context.Context, limit time.Duration) bool {
	const window = 2 * time.Second
	deadline := time.Now().Add(limit)
	for {
		before, err := readBusyCPU()
		if err != nil {
			return false // no /proc: nothing to wait for
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(window):
		}
		after, err := readBusyCPU()
		if err != nil {
			return false
		}
		if (after - before).Seconds() < 0.1*float64(runtime.NumCPU())*window.Seconds() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
