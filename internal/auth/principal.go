package auth

import (
	"log/slog"
	"slices"
)

// Principal is the verified caller of a request: the key it was signed with,
// minus the secret.
type Principal struct {
	Name        string
	AccessKeyID string
	Scope       Scope
	Clusters    []string
}

func principalOf(k Key) *Principal {
	return &Principal{Name: k.Name, AccessKeyID: k.AccessKeyID, Scope: k.Scope, Clusters: slices.Clone(k.Clusters)}
}

// MayCallCluster reports whether p may act for cluster. Only agent keys are
// limited to clusters; admin and read-only keys are limited by operation,
// which the HTTP layer checks.
func (p *Principal) MayCallCluster(cluster string) bool {
	if p == nil {
		return false
	}
	if p.Scope != ScopeAgent {
		return true
	}
	for _, c := range p.Clusters {
		if c == AllClusters || c == cluster {
			return true
		}
	}
	return false
}

// LogValue logs who called; a Principal never holds a secret, but keeping the
// group small keeps request logs readable.
func (p *Principal) LogValue() slog.Value {
	if p == nil {
		return slog.StringValue("anonymous")
	}
	return slog.GroupValue(
		slog.String("name", p.Name),
		slog.String("accessKeyId", p.AccessKeyID),
		slog.String("scope", string(p.Scope)),
	)
}
