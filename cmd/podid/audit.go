package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/api"
)

type auditOptions struct {
	clientOptions
	cluster        string
	limit          int
	follow         bool
	interval       time.Duration
	outcome        string
	namespace      string
	serviceAccount string
}

func newAuditCmd() *cobra.Command {
	o := &auditOptions{}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit ledger of credential issuances and denials",
		Long: `Show podid server's audit ledger: every AssumeRoleForPodIdentity call, issued
or denied, with the pod, the role and, for a denial, the error and why.

Without --follow it prints the newest --limit matching events, newest first.
With --follow it prints the newest --limit oldest-first, then polls every
--interval and prints new events as they arrive, until interrupted; with
-o json it then prints one JSON object per line.

--outcome, --namespace and --service-account filter on this side; a denial
whose token could not be verified carries no namespace or service account,
so those filters leave it out (podid explain shows them).`,
		Example: `  podid audit --cluster prod --outcome denied
  podid audit --cluster prod --namespace shop --follow`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
		return o.run(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr())
	})
	o.addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.cluster, "cluster", "", "only this cluster's events (default: every cluster)")
	f.IntVar(&o.limit, "limit", 50, "how many matching events to show, 0 for all (with --follow: before following)")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new events as they arrive")
	f.DurationVar(&o.interval, "interval", 2*time.Second, "how often --follow polls the server")
	f.StringVar(&o.outcome, "outcome", "", "only issued or denied events")
	f.StringVar(&o.namespace, "namespace", "", "only events of this namespace")
	f.StringVar(&o.serviceAccount, "service-account", "", "only events of this service account")
	return cmd
}

// matcher returns the client-side filter, or nil when there is none.
func (o *auditOptions) matcher() func(api.AuditEvent) bool {
	if o.outcome == "" && o.namespace == "" && o.serviceAccount == "" {
		return nil
	}
	return o.match
}

func (o *auditOptions) match(e api.AuditEvent) bool {
	return (o.outcome == "" || e.Outcome == o.outcome) &&
		(o.namespace == "" || e.Namespace == o.namespace) &&
		(o.serviceAccount == "" || e.ServiceAccount == o.serviceAccount)
}

func (o *auditOptions) run(ctx context.Context, w, stderr io.Writer) error {
	switch {
	case o.outcome != "" && o.outcome != "issued" && o.outcome != "denied":
		return usageErrorf("--outcome %q: use issued or denied", o.outcome)
	case o.limit < 0:
		return usageErrorf("--limit must not be negative")
	case o.follow && o.interval <= 0:
		return usageErrorf("--interval must be positive")
	}
	c, err := o.connect(ctx)
	if err != nil {
		return err
	}
	events, newest, err := collectAudit(ctx, c.admin, o.cluster, 0, o.limit, o.matcher())
	if err != nil {
		return err
	}
	if !o.follow {
		return o.render(w, auditList{Events: nonNil(events)}, func(w io.Writer) error {
			if len(events) == 0 {
				_, err := fmt.Fprintln(w, "No audit events.")
				return err
			}
			auditHeader(w)
			for _, e := range events {
				auditRow(w, e)
			}
			return nil
		})
	}

	if o.output == "table" {
		auditHeader(w)
	}
	slices.Reverse(events)
	if err := o.stream(w, events); err != nil {
		return err
	}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fresh, top, err := collectAudit(ctx, c.admin, o.cluster, newest, 0, o.matcher())
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// A server restart should not end a follow; anything else does.
			if e := o.explainError(err); exitCode(e) == exitUnavailable {
				fmt.Fprintf(stderr, "podid: %v (retrying)\n", e)
				continue
			}
			return err
		}
		newest = max(newest, top)
		slices.Reverse(fresh)
		if err := o.stream(w, fresh); err != nil {
			return err
		}
	}
}

// stream prints events as they come: rows, JSON lines or YAML documents.
func (o *auditOptions) stream(w io.Writer, events []api.AuditEvent) error {
	for _, e := range events {
		switch o.output {
		case "json":
			raw, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "%s\n", raw); err != nil {
				return err
			}
		case "yaml":
			raw, err := yaml.Marshal(e)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "---\n%s", raw); err != nil {
				return err
			}
		default:
			auditRow(w, e)
		}
	}
	return nil
}

// auditList is what -o json prints without --follow.
type auditList struct {
	Events []api.AuditEvent `json:"events"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// collectAudit pages the ledger from the newest event down to (not
// including) afterID, and returns up to limit events (0: all) that match,
// newest first, with the highest event id seen.
func collectAudit(ctx context.Context, c *api.Client, cluster string, afterID int64, limit int, match func(api.AuditEvent) bool) ([]api.AuditEvent, int64, error) {
	var out []api.AuditEvent
	newest := afterID
	token := ""
	// Filters and follow polls may skip many events; a large page keeps the
	// number of requests down. A plain "show me 20" asks for 20.
	page := 1000
	if afterID == 0 && limit > 0 && match == nil {
		page = min(limit, 1000)
	}
	for {
		res, err := c.ListAuditEvents(ctx, cluster, page, token)
		if err != nil {
			return nil, 0, err
		}
		for _, e := range res.Events {
			if e.ID <= afterID {
				return out, newest, nil
			}
			newest = max(newest, e.ID)
			if match != nil && !match(e) {
				continue
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				return out, newest, nil
			}
		}
		if res.NextToken == nil || len(res.Events) == 0 {
			return out, newest, nil
		}
		token = *res.NextToken
	}
}

// Audit rows use fixed minimum widths rather than a tabwriter so that rows
// printed by --follow line up with the ones before them.
const auditFormat = "%-20s  %-12s  %-12s  %-16s  %-16s  %-7s  %s\n"

func auditHeader(w io.Writer) {
	fmt.Fprintf(w, auditFormat, "TIME", "CLUSTER", "NAMESPACE", "SERVICE ACCOUNT", "POD", "OUTCOME", "DETAIL")
}

func auditRow(w io.Writer, e api.AuditEvent) {
	detail := e.RoleArn
	if e.Outcome == "denied" {
		detail = e.ErrorType + ": " + e.Message
	}
	fmt.Fprintf(w, auditFormat, formatTime(e.Time.Time()), e.Cluster, orDash(e.Namespace), orDash(e.ServiceAccount),
		orDash(e.PodName), e.Outcome, detail)
}
