package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
	"github.com/podid/podid/internal/kubeapi"
	"github.com/podid/podid/internal/webhook"
)

type explainOptions struct {
	clientOptions
	cluster        string
	namespace      string
	serviceAccount string
	pod            string
	kubeconfig     string
	kubeContext    string
	events         int
	scan           int
	// kube returns the Kubernetes client for --pod; tests replace it.
	kube func(kubeconfig, kubeContext string) (kubernetes.Interface, error)
}

func newExplainCmd() *cobra.Command {
	return newExplainCmdWith(func(kubeconfig, kubeContext string) (kubernetes.Interface, error) {
		cfg, err := kubeapi.Load(kubeconfig, kubeContext)
		if err != nil {
			return nil, err
		}
		return kubernetes.NewForConfig(cfg)
	})
}

func newExplainCmdWith(kube func(kubeconfig, kubeContext string) (kubernetes.Interface, error)) *cobra.Command {
	o := &explainOptions{kube: kube}
	cmd := &cobra.Command{
		Use:   "explain",
		Short: "Explain which role a service account's pods get, and why they were denied",
		Long: `Explain what podid does for the pods of one service account: which
association applies, the role and target role, the session tags (or the
external id and session policy) STS gets, the latest issuances and denials
from the audit ledger with their reasons, and what to change.

With --pod it reads the pod from the cluster (--kubeconfig, --context; the
default is the in-cluster configuration or ~/.kube/config), takes its
service account, and checks that the webhook injected the token volume and
the environment the AWS SDKs need.

It exits 0 when an association applies, 2 when none does or the cluster is
not registered, and with the usual client exit codes on other errors.`,
		Example: `  podid explain --cluster prod --namespace shop --service-account checkout
  podid explain --cluster prod --namespace shop --pod checkout-7d9f-abcde`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error { return o.run(ctx, cmd.OutOrStdout()) })
	o.addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.cluster, "cluster", "", "cluster name as registered with podid server (required)")
	f.StringVar(&o.namespace, "namespace", "", "the pods' namespace (required)")
	f.StringVar(&o.serviceAccount, "service-account", "", "the pods' service account (required unless --pod)")
	f.StringVar(&o.pod, "pod", "", "a pod to check; its service account is used")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for --pod (default: in-cluster, $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context for --pod (default: the current one)")
	f.IntVar(&o.events, "events", 5, "how many recent issuances and denials to show of each kind")
	f.IntVar(&o.scan, "scan", 10000, "how many of the cluster's newest ledger events to search")
	return cmd
}

// explanation is explain's result; -o json prints it as is.
type explanation struct {
	Cluster        clusterInfo      `json:"cluster"`
	Namespace      string           `json:"namespace"`
	ServiceAccount string           `json:"serviceAccount"`
	Pod            *podCheck        `json:"pod,omitempty"`
	Association    *api.Association `json:"association"`
	RoleArn        string           `json:"roleArn,omitempty"`
	TargetRoleArn  string           `json:"targetRoleArn,omitempty"`
	SessionTags    []sessionTag     `json:"sessionTags,omitempty"`
	ExternalID     string           `json:"externalId,omitempty"`
	SessionPolicy  string           `json:"sessionPolicy,omitempty"`
	Issued         []api.AuditEvent `json:"recentIssuances"`
	Denied         []api.AuditEvent `json:"recentDenials"`
	Unverified     []api.AuditEvent `json:"unverifiedTokenDenials"`
	Advice         []adviceItem     `json:"whatToChange"`
}

type clusterInfo struct {
	Name     string `json:"name"`
	Arn      string `json:"arn"`
	Issuer   string `json:"issuer"`
	KeysKind string `json:"keysKind"`
}

type sessionTag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type adviceItem struct {
	Reason string `json:"reason"`
	Advice string `json:"advice"`
}

// podCheck is what --pod found.
type podCheck struct {
	Name           string   `json:"name"`
	UID            string   `json:"uid"`
	NodeName       string   `json:"nodeName,omitempty"`
	ServiceAccount string   `json:"serviceAccount"`
	TokenVolume    bool     `json:"tokenVolume"`
	Audience       string   `json:"audience,omitempty"`
	Injected       []string `json:"injectedContainers"`
	NotInjected    []string `json:"notInjectedContainers"`
	OptedOut       bool     `json:"optedOut,omitempty"`
}

func (o *explainOptions) run(ctx context.Context, w io.Writer) error {
	switch {
	case o.cluster == "" || o.namespace == "":
		return usageErrorf("--cluster and --namespace are required")
	case o.serviceAccount == "" && o.pod == "":
		return usageErrorf("give --service-account or --pod")
	case o.events < 0 || o.scan < 0:
		return usageErrorf("--events and --scan must not be negative")
	}
	ex := &explanation{Namespace: o.namespace, ServiceAccount: o.serviceAccount}
	if o.pod != "" {
		if err := o.checkPod(ctx, ex); err != nil {
			return err
		}
	}
	c, err := o.connect(ctx)
	if err != nil {
		return err
	}
	cl, err := c.admin.DescribeCluster(ctx, o.cluster)
	if err != nil {
		if api.ErrorType(err) == "ResourceNotFoundException" {
			return &exitError{code: exitNotFound, err: fmt.Errorf("cluster %s is not registered with podid server: its pods are denied with ResourceNotFoundException", o.cluster),
				hint: "register it with `podid cluster register`, or check the name the agent uses (--cluster-name) against `podid cluster list`"}
		}
		return err
	}
	ex.Cluster = clusterInfo{Name: cl.Name, Arn: cl.Arn, Issuer: cl.Issuer, KeysKind: cl.Keys.Kind}

	sums, err := listAll(ctx, c, o.cluster, ex.Namespace, ex.ServiceAccount)
	if err != nil {
		return err
	}
	if len(sums) > 0 {
		d, err := c.eks.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{
			ClusterName: aws.String(o.cluster), AssociationId: aws.String(sums[0].AssociationID)})
		if err != nil {
			return err
		}
		a := fromSDK(d.Association)
		ex.Association = &a
		ex.RoleArn, ex.TargetRoleArn = a.RoleArn, a.TargetRoleArn
		if a.DisableSessionTags {
			region, account := arnRegionAccount(cl.Arn)
			ex.ExternalID = identity.ExternalID(region, account, cl.Name, ex.Namespace, ex.ServiceAccount)
			ex.SessionPolicy = a.Policy
		} else {
			podName, podUID := "<the pod's name>", "<the pod's uid>"
			if ex.Pod != nil {
				podName, podUID = ex.Pod.Name, ex.Pod.UID
			}
			// The same function the server uses, so explain cannot drift.
			for _, tg := range identity.SessionTags(cl.Arn, cl.Name, ex.Namespace, ex.ServiceAccount, podName, podUID) {
				ex.SessionTags = append(ex.SessionTags, sessionTag{tg.Key, tg.Value})
			}
		}
	}
	if err := o.readLedger(ctx, c.admin, ex); err != nil {
		return err
	}
	ex.Advice = o.advise(ex)
	ex.Issued, ex.Denied, ex.Unverified = nonNil(ex.Issued), nonNil(ex.Denied), nonNil(ex.Unverified)
	if err := o.render(w, ex, func(w io.Writer) error { return printExplanation(w, ex) }); err != nil {
		return err
	}
	if ex.Association == nil {
		return &exitError{code: exitNotFound, err: fmt.Errorf("no association applies to service account %s in namespace %s of cluster %s", ex.ServiceAccount, ex.Namespace, ex.Cluster.Name)}
	}
	return nil
}

// checkPod reads the pod and checks what the webhook injected.
func (o *explainOptions) checkPod(ctx context.Context, ex *explanation) error {
	kc, err := o.kube(o.kubeconfig, o.kubeContext)
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("--pod: %w", err), hint: "pass --kubeconfig and --context for the cluster the pod runs in"}
	}
	pod, err := kc.CoreV1().Pods(o.namespace).Get(ctx, o.pod, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return &exitError{code: exitNotFound, err: fmt.Errorf("pod %s not found in namespace %s", o.pod, o.namespace)}
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return &exitError{code: exitDenied, err: fmt.Errorf("reading pod %s/%s: %w", o.namespace, o.pod, err), hint: "the kubeconfig's user needs get on pods in this namespace"}
	case err != nil:
		return &exitError{code: exitUnavailable, err: fmt.Errorf("reading pod %s/%s: %w", o.namespace, o.pod, err)}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if o.serviceAccount != "" && o.serviceAccount != sa {
		return usageErrorf("pod %s runs as service account %s, not %s: drop --service-account or fix it", o.pod, sa, o.serviceAccount)
	}
	ex.ServiceAccount = sa
	ex.Pod = inspectPod(pod)
	return nil
}

// inspectPod reports whether the webhook's token volume and variables are
// in the pod. It reads what EKS injects, so it also recognises pods that
// another pod identity webhook mutated.
func inspectPod(pod *corev1.Pod) *podCheck {
	pc := &podCheck{Name: pod.Name, UID: string(pod.UID), NodeName: pod.Spec.NodeName, ServiceAccount: pod.Spec.ServiceAccountName,
		OptedOut: pod.Labels[webhook.InjectLabel] == "false", Injected: []string{}, NotInjected: []string{}}
	if pc.ServiceAccount == "" {
		pc.ServiceAccount = "default"
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name != webhook.VolumeName || v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			if s.ServiceAccountToken != nil {
				pc.TokenVolume = true
				pc.Audience = s.ServiceAccountToken.Audience
			}
		}
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		var uri, file bool
		for _, e := range c.Env {
			uri = uri || e.Name == webhook.EnvCredentialsFullURI
			file = file || e.Name == webhook.EnvAuthorizationTokenFile
		}
		if uri && file {
			pc.Injected = append(pc.Injected, c.Name)
		} else {
			pc.NotInjected = append(pc.NotInjected, c.Name)
		}
	}
	return pc
}

// readLedger collects the latest issuances and denials of the service
// account, and the cluster's denials no service account could be tied to.
func (o *explainOptions) readLedger(ctx context.Context, c *api.Client, ex *explanation) error {
	full := func() bool {
		return len(ex.Issued) >= o.events && len(ex.Denied) >= o.events && len(ex.Unverified) >= o.events
	}
	seen, token := 0, ""
	for seen < o.scan && !full() {
		res, err := c.ListAuditEvents(ctx, ex.Cluster.Name, min(1000, o.scan-seen), token)
		if err != nil {
			return err
		}
		for _, e := range res.Events {
			seen++
			mine := e.Namespace == ex.Namespace && e.ServiceAccount == ex.ServiceAccount
			switch {
			case mine && e.Outcome == identity.OutcomeIssued && len(ex.Issued) < o.events:
				ex.Issued = append(ex.Issued, e)
			case mine && e.Outcome == identity.OutcomeDenied && len(ex.Denied) < o.events:
				ex.Denied = append(ex.Denied, e)
			case e.Namespace == "" && e.ServiceAccount == "" && e.Outcome == identity.OutcomeDenied && len(ex.Unverified) < o.events:
				ex.Unverified = append(ex.Unverified, e)
			}
		}
		if res.NextToken == nil || len(res.Events) == 0 {
			break
		}
		token = *res.NextToken
	}
	return nil
}

// advice maps each reason a pod can be denied to what to change.
func (o *explainOptions) adviceFor(reason string, ex *explanation) string {
	c := ex.Cluster
	switch reason {
	case "InvalidTokenException":
		return fmt.Sprintf("The token did not verify for cluster %s. Its issuer must be exactly %q, its key id must be among the cluster's signing keys (source %q; after a key rotation update the cluster), and its audience must be %s. Compare with `podid cluster list`; check the webhook's audience and that the agent's --cluster-name is %s.",
			c.Name, c.Issuer, c.KeysKind, identity.Audience, c.Name)
	case "ExpiredTokenException":
		return "The token was expired or not yet valid. Check the clocks of the nodes and of podid server (NTP), and that the application re-reads the projected token file (the kubelet rotates it; a copy taken once expires)."
	case "ResourceNotFoundException":
		return fmt.Sprintf("No association for %s/%s in cluster %s when the pod asked. Create it:\n    %s",
			ex.Namespace, ex.ServiceAccount, c.Name, createCommand(ex))
	case "AccessDeniedException":
		s := "STS refused the role, or the token was used from another node. The role's trust policy must allow podid server's AWS identity sts:AssumeRole and sts:TagSession"
		if ex.Association != nil && ex.Association.DisableSessionTags {
			s = "STS refused the role, or the token was used from another node. The role's trust policy must allow podid server's AWS identity sts:AssumeRole (session tags are disabled, so sts:TagSession is not needed; a condition may pin sts:ExternalId to " + ex.ExternalID + ")"
		}
		if ex.TargetRoleArn != "" {
			s += fmt.Sprintf("; the target role %s must trust %s the same way, with sts:ExternalId %s", ex.TargetRoleArn, ex.RoleArn, ex.Association.ExternalID)
		}
		return s + ". A message about nodes means the agent called for a node other than the pod's: check the agent's --node-name."
	case "ThrottlingException":
		return "Rate limited, by podid server (--rate-limit-per-key, --rate-limit-per-namespace, --max-concurrent-sts) or by STS. The agent caches credentials, so this is usually many pods starting at once or clients bypassing the agent; raise the limits or spread the load."
	case "InvalidParameterException", "InvalidRequestException":
		return "The request or the STS call was malformed: an empty token, or a session policy or tags STS rejects. Check the association's policy and the agent's version."
	case "ServiceUnavailableException":
		return "podid server could not reach STS or its store. See podid server's logs at the time of the denial; agents keep serving cached credentials meanwhile."
	}
	return "See podid server's logs at the time of the denial (level error)."
}

func (o *explainOptions) advise(ex *explanation) []adviceItem {
	var out []adviceItem
	if ex.Pod != nil {
		switch {
		case ex.Pod.OptedOut:
			out = append(out, adviceItem{"pod not injected", fmt.Sprintf("Pod %s has label %s=false, so the webhook left it alone. Remove the label and recreate the pod.", ex.Pod.Name, webhook.InjectLabel)})
		case !ex.Pod.TokenVolume || len(ex.Pod.Injected) == 0:
			out = append(out, adviceItem{"pod not injected", fmt.Sprintf("Pod %s has no pod identity token volume or credential variables. The webhook mutates pods when they are created, and only for service accounts that had an association then (it reloads them every 30 s): check the webhook is running and recreate the pod.", ex.Pod.Name)})
		case ex.Pod.Audience != identity.Audience:
			out = append(out, adviceItem{"wrong audience", fmt.Sprintf("Pod %s's token has audience %q; podid server accepts only %s. Fix the webhook's audience setting and recreate the pod.", ex.Pod.Name, ex.Pod.Audience, identity.Audience)})
		}
	}
	if ex.Association == nil {
		out = append(out, adviceItem{"no association", fmt.Sprintf("Nothing maps %s/%s in cluster %s to a role, so its pods are denied with ResourceNotFoundException. Create the association:\n    %s",
			ex.Namespace, ex.ServiceAccount, ex.Cluster.Name, createCommand(ex))})
	}
	var reasons []string
	for _, e := range slices.Concat(ex.Denied, ex.Unverified) {
		if !slices.Contains(reasons, e.ErrorType) {
			reasons = append(reasons, e.ErrorType)
		}
	}
	for _, r := range reasons {
		if r == "ResourceNotFoundException" && ex.Association == nil {
			continue // said above
		}
		out = append(out, adviceItem{r, o.adviceFor(r, ex)})
	}
	return out
}

func createCommand(ex *explanation) string {
	return fmt.Sprintf("podid association create --cluster %s --namespace %s --service-account %s --role-arn <role ARN>", ex.Cluster.Name, ex.Namespace, ex.ServiceAccount)
}

// arnRegionAccount returns the region and account of an ARN.
func arnRegionAccount(arn string) (region, account string) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 {
		return "", ""
	}
	return parts[3], parts[4]
}

func printExplanation(w io.Writer, ex *explanation) error {
	ew := &errWriter{w: w}
	p := ew.printf
	c := ex.Cluster
	p("Cluster %s\n", c.Name)
	p("  ARN:     %s\n  issuer:  %s\n  keys:    %s\n", c.Arn, c.Issuer, c.KeysKind)
	if pc := ex.Pod; pc != nil {
		p("\nPod %s/%s\n", ex.Namespace, pc.Name)
		p("  service account:  %s\n  node:             %s\n", pc.ServiceAccount, orDash(pc.NodeName))
		switch {
		case pc.TokenVolume:
			p("  token volume:     %s (audience %s)\n", webhook.VolumeName, pc.Audience)
		default:
			p("  token volume:     missing\n")
		}
		p("  credentials env:  %s\n", listOrNone(pc.Injected))
		if len(pc.NotInjected) > 0 {
			p("  not injected:     %s\n", strings.Join(pc.NotInjected, ", "))
		}
	}
	p("\nAssociation for %s/%s\n", ex.Namespace, ex.ServiceAccount)
	a := ex.Association
	if a == nil {
		p("  none: pods of this service account are denied (ResourceNotFoundException)\n")
	} else {
		p("  id:            %s\n  role:          %s\n", a.AssociationID, a.RoleArn)
		if a.TargetRoleArn != "" {
			p("  target role:   %s (assumed with the role's credentials, external id %s)\n", a.TargetRoleArn, a.ExternalID)
		} else {
			p("  target role:   -\n")
		}
		if a.DisableSessionTags {
			p("\nSession tags are disabled; STS AssumeRole on %s gets\n", a.RoleArn)
			p("  external id:     %s\n", ex.ExternalID)
			p("  session policy:  %s\n", orDash(ex.SessionPolicy))
		} else {
			p("\nSession tags a pod gets (transitive, on AssumeRole of %s)\n", a.RoleArn)
			tw := newTable(ew)
			for _, t := range ex.SessionTags {
				fmt.Fprintf(tw, "  %s\t%s\n", t.Key, t.Value)
			}
			_ = tw.Flush()
		}
	}
	eventTable := func(title string, evs []api.AuditEvent, node bool) {
		p("\n%s\n", title)
		if len(evs) == 0 {
			p("  none\n")
			return
		}
		tw := newTable(ew)
		if node {
			fmt.Fprintf(tw, "  TIME\tNODE\tERROR\tMESSAGE\n")
		} else {
			fmt.Fprintf(tw, "  TIME\tPOD\tOUTCOME\tDETAIL\n")
		}
		for _, e := range evs {
			switch {
			case node:
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", formatTime(e.Time.Time()), orDash(e.NodeName), e.ErrorType, e.Message)
			case e.Outcome == identity.OutcomeIssued:
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", formatTime(e.Time.Time()), orDash(e.PodName), e.Outcome, e.RoleArn)
			default:
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s: %s\n", formatTime(e.Time.Time()), orDash(e.PodName), e.Outcome, e.ErrorType, e.Message)
			}
		}
		_ = tw.Flush()
	}
	eventTable("Recent issuances", ex.Issued, false)
	eventTable("Recent denials", ex.Denied, false)
	eventTable(fmt.Sprintf("Recent denials in cluster %s whose token did not verify (no service account known)", c.Name), ex.Unverified, true)
	p("\nWhat to change\n")
	if len(ex.Advice) == 0 {
		p("  nothing: the association is in place and no recent denials were found\n")
	}
	for _, a := range ex.Advice {
		p("  - %s: %s\n", a.Reason, a.Advice)
	}
	return ew.err
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// errWriter keeps the first write error so a long report is not a wall of
// error checks.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }
