//go:build linux

package harness

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/podid/podid/api"
)

// AccessKey is a podid access key as written in the server's keys file.
type AccessKey struct {
	Name            string   `json:"name"`
	AccessKeyID     string   `json:"accessKeyId"`
	SecretAccessKey string   `json:"secretAccessKey"`
	Scope           string   `json:"scope"`
	Clusters        []string `json:"clusters,omitempty"`
}

// Provider returns the key as AWS SDK credentials.
func (k AccessKey) Provider() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(k.AccessKeyID, k.SecretAccessKey, "")
}

func newAccessKey(name, scope string, clusters ...string) AccessKey {
	return AccessKey{
		Name:            name,
		AccessKeyID:     "PODIDE2E" + strings.ToUpper(rand.Text()[:12]),
		SecretAccessKey: rand.Text() + rand.Text()[:14],
		Scope:           scope,
		Clusters:        clusters,
	}
}

// ServerOptions configures StartServer.
type ServerOptions struct {
	// Podid is the podid binary.
	Podid string
	// STSEndpoint is the STS the server calls; STSCredentials sign those
	// calls, passed the way operators do: AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY in the server's environment.
	STSEndpoint    string
	STSCredentials aws.Credentials
	// Region and Account appear in the ARNs the server returns.
	Region, Account string
}

// Server is a running podid server with a SQLite store and three access
// keys: admin, read-only, and an agent key valid for every cluster.
type Server struct {
	URL      string
	Admin    AccessKey
	ReadOnly AccessKey
	Agent    AccessKey
	// KeyFiles holds each key as the {"accessKeyId","secretAccessKey"}
	// file podid's commands take with --key-file, by Name.
	KeyFiles map[string]string
	Region   string
	Process  *Process
	Dir      string
}

// StartServer runs `podid server` on a free loopback port and waits for
// /healthz; tb.Cleanup stops it.
func StartServer(ctx context.Context, tb TB, o ServerOptions) (*Server, error) {
	dir, err := TempDir(tb, "podid-e2e-server-*")
	if err != nil {
		return nil, err
	}
	s := &Server{
		Admin:    newAccessKey("e2e-admin", "admin"),
		ReadOnly: newAccessKey("e2e-read-only", "read-only"),
		Agent:    newAccessKey("e2e-agent", "agent", "*"),
		Region:   o.Region,
		Dir:      dir,
	}
	keys, _ := json.MarshalIndent(map[string]any{"keys": []AccessKey{s.Admin, s.ReadOnly, s.Agent}}, "", "  ")
	keysFile := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keysFile, keys, 0o600); err != nil {
		return nil, err
	}
	env := append(CleanEnv(),
		"AWS_ACCESS_KEY_ID="+o.STSCredentials.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+o.STSCredentials.SecretAccessKey,
	)
	if o.STSCredentials.SessionToken != "" {
		env = append(env, "AWS_SESSION_TOKEN="+o.STSCredentials.SessionToken)
	}
	s.KeyFiles = map[string]string{}
	for _, k := range []AccessKey{s.Admin, s.ReadOnly, s.Agent} {
		path := filepath.Join(dir, k.Name+".json")
		raw, _ := json.Marshal(map[string]string{"accessKeyId": k.AccessKeyID, "secretAccessKey": k.SecretAccessKey})
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			return nil, err
		}
		s.KeyFiles[k.Name] = path
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port := freePort()
		s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
		p, err := StartProcess(tb, "podid server", filepath.Join(dir, "server.log"), env, o.Podid, "server",
			"--listen=127.0.0.1:"+strconv.Itoa(port),
			"--data-dir="+filepath.Join(dir, "data"),
			"--keys-file="+keysFile,
			"--region="+o.Region,
			"--account="+o.Account,
			"--sts-endpoint="+o.STSEndpoint,
			"--log-level=debug",
		)
		if err != nil {
			return nil, err
		}
		s.Process = p
		if lastErr = waitHTTP(ctx, p, s.URL+"/healthz"); lastErr == nil {
			return s, nil
		}
		p.Stop()
		if !addressInUse(p) {
			break
		}
	}
	return nil, lastErr
}

// Client is an admin client of the server's own API.
func (s *Server) Client() *api.Client {
	return &api.Client{Endpoint: s.URL, Credentials: s.Admin.Provider(), Region: s.Region}
}

// Agent is a running podid agent serving /v1/credentials on loopback.
type Agent struct {
	// URL is the full credentials URI, http://127.0.0.1:<port>/v1/credentials.
	URL     string
	Process *Process
}

// StartAgent runs `podid agent` for cluster on 127.0.0.1 (with
// --allow-loopback, the agent's switch for tests and local runs) and waits
// for its readiness probe; tb.Cleanup stops it.
func StartAgent(ctx context.Context, tb TB, podid string, srv *Server, cluster string) (*Agent, error) {
	dir, err := TempDir(tb, "podid-e2e-agent-*")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port, probe := freePort(), freePort()
		p, err := StartProcess(tb, "podid agent "+cluster, filepath.Join(dir, "agent.log"), CleanEnv(), podid, "agent",
			"--cluster-name="+cluster,
			"--endpoint="+srv.URL,
			"--region="+srv.Region,
			"--key-file="+srv.KeyFiles[srv.Agent.Name],
			"--node-name=e2e-node",
			"--bind-hosts=127.0.0.1",
			"--port="+strconv.Itoa(port),
			"--allow-loopback",
			"--probe-host=127.0.0.1",
			"--probe-port="+strconv.Itoa(probe),
			"--metrics-port=0",
			"--log-level=debug",
		)
		if err != nil {
			return nil, err
		}
		if lastErr = waitHTTP(ctx, p, "http://127.0.0.1:"+strconv.Itoa(probe)+"/readyz"); lastErr == nil {
			return &Agent{URL: "http://127.0.0.1:" + strconv.Itoa(port) + "/v1/credentials", Process: p}, nil
		}
		p.Stop()
		if !addressInUse(p) {
			break
		}
	}
	return nil, lastErr
}

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, p *Process, url string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitFor(p, time.Minute, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	})
}

// CleanEnv is the test's environment without AWS_* and PODID_* variables,
// so a developer's own AWS profile or podid settings cannot leak into the
// processes under test, and with no AWS config files or instance metadata
// to fall back on.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "PODID_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/nonexistent/podid-e2e/config",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent/podid-e2e/credentials",
	)
}

// WebhookOptions configures StartWebhook.
type WebhookOptions struct {
	Podid   string
	Server  *Server
	Cluster *Cluster
	// Port is the loopback port to serve /mutate on; the webhook
	// configuration pointing at it is created beforehand.
	Port int
	// Namespace holds the Secret with the webhook's managed CA; it must
	// exist.
	Namespace string
	// ConfigName is the MutatingWebhookConfiguration whose caBundle the
	// webhook keeps up to date.
	ConfigName string
}

// Webhook is a running podid webhook.
type Webhook struct {
	// URL is https://127.0.0.1:<port>/mutate.
	URL     string
	Process *Process
}

// StartWebhook runs `podid webhook` against the cluster with its managed
// CA: it creates its CA and serving certificate (valid for 127.0.0.1), keeps
// them in a Secret, and patches the CA into opts.ConfigName, as it does in
// a real cluster. Its association index polls podid server every second
// with the read-only key. It waits for /readyz; tb.Cleanup stops it.
func StartWebhook(ctx context.Context, tb TB, o WebhookOptions) (*Webhook, error) {
	dir, err := TempDir(tb, "podid-e2e-webhook-*")
	if err != nil {
		return nil, err
	}
	metrics := freePort()
	p, err := StartProcess(tb, "podid webhook "+o.Cluster.Name, filepath.Join(dir, "webhook.log"), CleanEnv(), o.Podid, "webhook",
		"--cluster-name="+o.Cluster.Name,
		"--server="+o.Server.URL,
		"--region="+o.Server.Region,
		"--key-file="+o.Server.KeyFiles[o.Server.ReadOnly.Name],
		"--kubeconfig="+o.Cluster.Kubeconfig,
		"--listen=127.0.0.1:"+strconv.Itoa(o.Port),
		"--namespace="+o.Namespace,
		"--service-name=podid-webhook",
		"--secret-name=podid-webhook-tls",
		"--extra-ips=127.0.0.1",
		"--webhook-config-name="+o.ConfigName,
		"--metrics-host=127.0.0.1",
		"--metrics-port="+strconv.Itoa(metrics),
		"--refresh-interval=1s",
		"--log-level=debug",
	)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, p, "http://127.0.0.1:"+strconv.Itoa(metrics)+"/readyz"); err != nil {
		return nil, err
	}
	return &Webhook{URL: "https://127.0.0.1:" + strconv.Itoa(o.Port) + "/mutate", Process: p}, nil
}
