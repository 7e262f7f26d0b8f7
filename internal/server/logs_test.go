package server_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/auth"
)

// TestNoSecretsInLogs runs the whole flow with debug logging on the server
// and the agent, successes and failures, and fails if any access key
// secret, session token or service-account token shows up in the output.
func TestNoSecretsInLogs(t *testing.T) {
	e := newEnv(t)
	e.registerFixtureClusters(t)
	e.createAssociation(t, "cluster-a", "shop", "checkout", nil)
	ctx := context.Background()
	agentLog := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(agentLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	remote := agent.NewRemote(agent.RemoteConfig{Client: e.apiClient(e.agent), Cluster: "cluster-a", NodeName: "node-1", Logger: logger})
	cache := agent.NewCache(agent.CacheConfig{Next: remote, Logger: logger})
	node := httptest.NewServer(agent.NewHandler(agent.HandlerConfig{Retriever: cache, AllowLoopback: true, Logger: logger}))
	defer node.Close()

	podToken := fixture(t, "cluster-a/token-pod-bound.jwt")
	var issued []string
	get := func(token string) int {
		req, _ := http.NewRequest("GET", node.URL+"/v1/credentials", nil)
		req.Header.Set("Authorization", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			issued = append(issued, string(body))
		}
		return resp.StatusCode
	}
	if get(podToken) != 200 {
		t.Fatal("the pod got no credentials")
	}
	get(podToken) // cache hit
	get(fixture(t, "cluster-a/token-wrong-audience.jwt"))
	get(fixture(t, "cluster-b/token-pod-bound.jwt"))
	e.sts.FailNextN(5, "Throttling", 400, "Rate exceeded")
	if _, err := e.apiClient(e.keys[auth.ScopeAdmin]).AssumeRoleForPodIdentity(ctx, "cluster-a", api.AssumeRoleForPodIdentityRequest{Token: podToken}); err == nil {
		t.Error("throttled call succeeded")
	}
	wrong := e.keys[auth.ScopeAdmin]
	wrong.SecretAccessKey = "WRONGwrongWRONGwrongWRONGwrong0123456789"
	_, _ = e.apiClient(wrong).ListClusters(ctx)

	stsCreds, _ := e.sts.Credentials().Retrieve(ctx)
	secrets := map[string]string{
		"admin secret":      e.keys[auth.ScopeAdmin].SecretAccessKey,
		"read-only secret":  e.keys[auth.ScopeReadOnly].SecretAccessKey,
		"agent secret":      e.agent.SecretAccessKey,
		"wrong secret":      wrong.SecretAccessKey,
		"server STS secret": stsCreds.SecretAccessKey,
	}
	for i, tok := range []string{podToken, fixture(t, "cluster-a/token-wrong-audience.jwt"), fixture(t, "cluster-b/token-pod-bound.jwt")} {
		parts := strings.Split(tok, ".")
		secrets["token "+string(rune('0'+i))+" payload"] = parts[1][:40]
		secrets["token "+string(rune('0'+i))+" signature"] = parts[2][:40]
	}
	for _, body := range issued {
		for _, field := range []string{`"SecretAccessKey":"`, `"Token":"`} {
			_, rest, _ := strings.Cut(body, field)
			v, _, _ := strings.Cut(rest, `"`)
			secrets["issued "+field] = v
		}
	}
	logs := e.logs.String() + agentLog.String()
	if !strings.Contains(logs, "pod identity denied") || !strings.Contains(logs, "credential request failed") {
		t.Fatalf("the flow logged too little to be a meaningful check:\n%s", logs)
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s is empty: the check would pass vacuously", what)
		}
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain the %s", what)
		}
	}
}
