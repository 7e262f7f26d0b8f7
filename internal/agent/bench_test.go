package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The pair below measures what the agent adds on a warm cache (host guard,
// token screening, hashing, cache lookup, JSON encoding, metrics) over the
// cheapest possible net/http handler writing a body of the same size.

func warmHandler(b *testing.B) (http.Handler, string) {
	b.Helper()
	fake := newFake(time.Now, 6*time.Hour)
	cache := NewCache(CacheConfig{Next: fake})
	h := NewHandler(HandlerConfig{Retriever: cache, AllowLoopback: true, Metrics: NewMetrics(nil)})
	tok := makeToken(b, "system:serviceaccount:default:app", time.Now(), time.Now().Add(24*time.Hour))
	if _, err := cache.Retrieve(context.Background(), tok); err != nil {
		b.Fatal(err)
	}
	return h, tok
}

// bareHandler writes a body as large as the agent's answer for the same
// credentials.
func bareHandler(b *testing.B, full http.Handler, tok string) http.Handler {
	b.Helper()
	w := httptest.NewRecorder()
	full.ServeHTTP(w, credRequest(http.MethodGet, "127.0.0.1", tok))
	if w.Code != http.StatusOK {
		b.Fatalf("warm-up: %d %s", w.Code, w.Body)
	}
	body := w.Body.Bytes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

func BenchmarkHandlerCacheHit(b *testing.B) {
	h, tok := warmHandler(b)
	b.Run("direct", func(b *testing.B) { benchDirect(b, h, tok) })
	b.Run("loopback", func(b *testing.B) { benchLoopback(b, h, tok) })
}

func BenchmarkBareHandler(b *testing.B) {
	full, tok := warmHandler(b)
	h := bareHandler(b, full, tok)
	b.Run("direct", func(b *testing.B) { benchDirect(b, h, tok) })
	b.Run("loopback", func(b *testing.B) { benchLoopback(b, h, tok) })
}

func benchDirect(b *testing.B, h http.Handler, tok string) {
	r := credRequest(http.MethodGet, "127.0.0.1", tok)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d", w.Code)
		}
	}
}

func benchLoopback(b *testing.B, h http.Handler, tok string) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+CredentialsPath, nil)
			req.Header.Set("Authorization", tok)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
