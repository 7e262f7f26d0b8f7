package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
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
	"github.com/podid/podid/internal/kubeapi"
)

// IRSA annotations on a ServiceAccount, as the amazon-eks-pod-identity-webhook
// reads them.
const (
	irsaRoleAnnotation             = "eks.amazonaws.com/role-arn"
	irsaRegionalEndpointAnnotation = "eks.amazonaws.com/sts-regional-endpoints"
	irsaTokenExpirationAnnotation  = "eks.amazonaws.com/token-expiration"
	irsaAudienceAnnotation         = "eks.amazonaws.com/audience"
)

// importedFromTag marks an association podid import created, so an operator
// can tell them from hand-made ones. It is not an ownership tag: podid apply
// --prune never deletes what import made.
const importedFromTag = "podid.io/imported-from"

// ignoredIRSAAnnotations says why each IRSA setting has no Pod Identity
// equivalent, so an operator does not expect it to carry over.
var ignoredIRSAAnnotations = map[string]string{
	irsaRegionalEndpointAnnotation: "pods get credentials from the podid agent, not from STS, so the STS endpoint does not matter",
	irsaTokenExpirationAnnotation:  "the podid webhook sets the lifetime of the Pod Identity token",
	irsaAudienceAnnotation:         "Pod Identity tokens always have the audience pods.eks.amazonaws.com",
}

// importRoleARNRE is the role ARN shape podid server accepts, checked here
// so a bad annotation is reported as skipped rather than as a failed create.
var importRoleARNRE = regexp.MustCompile(`^arn:aws(-cn|-us-gov|-iso|-iso-b|-iso-e|-iso-f|-eusc)?:iam::[0-9]{12}:role/([\x21-\x7e]+/)?[\w+=,.@-]{1,64}$`)

// Statuses of an imported service account.
const (
	importProposed = "PROPOSED" // dry run: would be created
	importCreated  = "CREATED"
	importExists   = "EXISTS"   // an association with the same role is there
	importConflict = "CONFLICT" // an association with another role is there
	importSkipped  = "SKIPPED"  // cannot be imported; Reason says why
	importFailed   = "FAILED"   // the create was refused; Reason says why
)

type importOptions struct {
	clientOptions
	cluster     string
	namespace   string
	kubeconfig  string
	kubeContext string
	create      bool
	// kube returns the Kubernetes client; tests replace it.
	kube func(kubeconfig, kubeContext string) (kubernetes.Interface, error)
}

// importReport is what podid import irsa prints; -o json and yaml print it
// as is.
type importReport struct {
	Cluster         string           `json:"cluster"`
	DryRun          bool             `json:"dryRun"`
	ServiceAccounts []importedSA     `json:"serviceAccounts"`
	Summary         importSummary    `json:"summary"`
	clusterMissing  bool             // the cluster is not registered with podid
	firstFailure    *exitError       // the first create error, for the exit code
	notes           []importedSANote // ignored annotations, in row order
}

// importedSA is one ServiceAccount annotated with an IRSA role.
type importedSA struct {
	Namespace          string              `json:"namespace"`
	ServiceAccount     string              `json:"serviceAccount"`
	RoleArn            string              `json:"roleArn"`
	Status             string              `json:"status"`
	Reason             string              `json:"reason,omitempty"`
	AssociationID      string              `json:"associationId,omitempty"`
	IgnoredAnnotations []ignoredAnnotation `json:"ignoredAnnotations,omitempty"`
}

type ignoredAnnotation struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Note  string `json:"note"`
}

type importedSANote struct {
	who string
	ignoredAnnotation
}

type importSummary struct {
	Proposed int `json:"proposed"`
	Created  int `json:"created"`
	Exists   int `json:"exists"`
	Conflict int `json:"conflict"`
	Skipped  int `json:"skipped"`
	Failed   int `json:"failed"`
}

func newImportCmd() *cobra.Command {
	return newImportCmdWith(func(kubeconfig, kubeContext string) (kubernetes.Interface, error) {
		cfg, err := kubeapi.Load(kubeconfig, kubeContext)
		if err != nil {
			return nil, err
		}
		return kubernetes.NewForConfig(cfg)
	})
}

// newImportCmdWith builds podid import with kube as the source of the
// Kubernetes client, so tests can hand it a fake clientset.
func newImportCmdWith(kube func(kubeconfig, kubeContext string) (kubernetes.Interface, error)) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Propose or create associations from another identity system's settings",
	}
	cmd.AddCommand(newImportIRSACmd(kube))
	return cmd
}

func newImportIRSACmd(kube func(kubeconfig, kubeContext string) (kubernetes.Interface, error)) *cobra.Command {
	o := &importOptions{kube: kube}
	cmd := &cobra.Command{
		Use:   "irsa",
		Short: "Propose (or --create) associations for ServiceAccounts annotated for IRSA",
		Long: `Read the cluster's ServiceAccounts (all namespaces, or --namespace) and, for
each one annotated ` + irsaRoleAnnotation + ` (IAM Roles for Service Accounts),
propose the matching association in the podid cluster --cluster.

Without --create nothing changes: each ServiceAccount is shown as
  PROPOSED  no association yet; --create would create it
  EXISTS    an association with the same role is already there
  CONFLICT  an association with another role (or a target role) is there;
            it is left alone
  SKIPPED   it cannot be imported (the reason is shown)
With --create the PROPOSED ones are created, tagged ` + importedFromTag + `=irsa,
and each shows CREATED or FAILED. Nothing is ever deleted or updated, so
running it again is safe.

The IRSA annotations ` + irsaRegionalEndpointAnnotation + `,
` + irsaTokenExpirationAnnotation + ` and ` + irsaAudienceAnnotation + ` have no
Pod Identity equivalent; they are reported as ignored.

The kubeconfig's user needs list on serviceaccounts. Exit codes: 0 ok, 4 if
any ServiceAccount conflicts, otherwise the usual client exit codes.`,
		Example: `  podid import irsa --kubeconfig ~/.kube/prod --cluster prod
  podid import irsa --kubeconfig ~/.kube/prod --cluster prod --namespace shop --create`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error { return o.run(ctx, cmd.OutOrStdout()) })
	o.addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.cluster, "cluster", "", "cluster name as registered with podid server (required)")
	f.StringVar(&o.namespace, "namespace", "", "only this namespace's ServiceAccounts (default: all namespaces)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: in-cluster, $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.kubeContext, "context", "", "kubeconfig context (default: the current one)")
	f.BoolVar(&o.create, "create", false, "create the PROPOSED associations (admin key); without it, a dry run")
	return cmd
}

func (o *importOptions) run(ctx context.Context, w io.Writer) error {
	if o.cluster == "" {
		return usageErrorf("--cluster is required: the name the cluster is registered under in podid (`podid cluster list`)")
	}
	if o.namespace != "" && !namespaceRE.MatchString(o.namespace) {
		return usageErrorf("--namespace %q is not a Kubernetes namespace name", o.namespace)
	}
	kc, err := o.kube(o.kubeconfig, o.kubeContext)
	if err != nil {
		return &exitError{code: exitUsage, err: err, hint: "pass --kubeconfig and --context for the cluster to import from"}
	}
	sas, err := listServiceAccounts(ctx, kc, o.namespace)
	if err != nil {
		return err
	}
	rep := &importReport{Cluster: o.cluster, DryRun: !o.create, ServiceAccounts: []importedSA{}}
	for _, sa := range sas {
		if row, ok := irsaRow(sa); ok {
			rep.ServiceAccounts = append(rep.ServiceAccounts, row)
		}
	}
	if len(rep.ServiceAccounts) > 0 {
		c, err := o.connect(ctx)
		if err != nil {
			return err
		}
		if err := o.compare(ctx, c, rep); err != nil {
			return err
		}
		if o.create {
			o.createProposed(ctx, c, rep)
		}
	}
	for _, r := range rep.ServiceAccounts {
		for _, a := range r.IgnoredAnnotations {
			rep.notes = append(rep.notes, importedSANote{who: r.Namespace + "/" + r.ServiceAccount, ignoredAnnotation: a})
		}
		switch r.Status {
		case importProposed:
			rep.Summary.Proposed++
		case importCreated:
			rep.Summary.Created++
		case importExists:
			rep.Summary.Exists++
		case importConflict:
			rep.Summary.Conflict++
		case importSkipped:
			rep.Summary.Skipped++
		case importFailed:
			rep.Summary.Failed++
		}
	}
	if err := o.render(w, rep, func(w io.Writer) error { return printImport(w, rep) }); err != nil {
		return err
	}
	switch {
	case rep.firstFailure != nil:
		return &exitError{code: rep.firstFailure.code, err: fmt.Errorf("%d association(s) could not be created; the first error: %w", rep.Summary.Failed, rep.firstFailure.err),
			hint: rep.firstFailure.hint}
	case rep.Summary.Conflict > 0:
		return &exitError{code: exitConflict, err: fmt.Errorf("%d service account(s) conflict with existing associations; they were left alone", rep.Summary.Conflict),
			hint: "compare with `podid association describe`; update or delete the association if the IRSA role is the one to keep"}
	}
	return nil
}

// listServiceAccounts lists every ServiceAccount of namespace ("" for all),
// page by page, sorted by namespace and name.
func listServiceAccounts(ctx context.Context, kc kubernetes.Interface, namespace string) ([]corev1.ServiceAccount, error) {
	var out []corev1.ServiceAccount
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := kc.CoreV1().ServiceAccounts(namespace).List(ctx, opts)
		if err != nil {
			where := "in all namespaces"
			if namespace != "" {
				where = "in namespace " + namespace
			}
			explained := kubeapi.Explain(err, "listing ServiceAccounts "+where, `"list" on serviceaccounts `+where)
			if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				return nil, &exitError{code: exitDenied, err: explained, hint: "check --kubeconfig and --context, and the user's RBAC"}
			}
			return nil, &exitError{code: exitUnavailable, err: explained}
		}
		out = append(out, list.Items...)
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	slices.SortFunc(out, func(a, b corev1.ServiceAccount) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// irsaRow is the row of an IRSA-annotated ServiceAccount, SKIPPED when it
// cannot become an association, PROPOSED otherwise; ok is false for a
// ServiceAccount without the role annotation.
func irsaRow(sa corev1.ServiceAccount) (importedSA, bool) {
	raw, ok := sa.Annotations[irsaRoleAnnotation]
	if !ok {
		return importedSA{}, false
	}
	role := strings.TrimSpace(raw)
	r := importedSA{Namespace: sa.Namespace, ServiceAccount: sa.Name, RoleArn: role, Status: importProposed}
	for _, name := range slices.Sorted(maps.Keys(ignoredIRSAAnnotations)) {
		if v, ok := sa.Annotations[name]; ok {
			r.IgnoredAnnotations = append(r.IgnoredAnnotations, ignoredAnnotation{Name: name, Value: v, Note: ignoredIRSAAnnotations[name]})
		}
	}
	switch {
	case role == "":
		r.Status, r.Reason = importSkipped, "annotation "+irsaRoleAnnotation+" is empty"
	case !importRoleARNRE.MatchString(role):
		r.Status, r.Reason = importSkipped, fmt.Sprintf("%q is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)", truncateFor(role))
	case !namespaceRE.MatchString(sa.Namespace):
		r.Status, r.Reason = importSkipped, fmt.Sprintf("namespace %q is not valid for EKS (lowercase letters, digits and '-', at most 63 characters)", truncateFor(sa.Namespace))
	case len(sa.Name) > 253 || !saRE.MatchString(sa.Name):
		r.Status, r.Reason = importSkipped, fmt.Sprintf("service account name %q is not valid for EKS (lowercase letters, digits, '-' and '.', at most 253 characters)", truncateFor(sa.Name))
	}
	return r, true
}

// truncateFor keeps a reason readable when a value is long.
func truncateFor(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// compare sets each PROPOSED row to EXISTS, CONFLICT or, when the cluster
// is not registered, SKIPPED, from what podid server has.
func (o *importOptions) compare(ctx context.Context, c *podidClient, rep *importReport) error {
	clusters, err := c.admin.ListClusters(ctx)
	if err != nil {
		return err
	}
	registered := slices.ContainsFunc(clusters, func(cl api.Cluster) bool { return cl.Name == o.cluster })
	if !registered {
		rep.clusterMissing = true
		for i := range rep.ServiceAccounts {
			if r := &rep.ServiceAccounts[i]; r.Status == importProposed {
				r.Status, r.Reason = importSkipped, fmt.Sprintf("cluster %s is not registered with podid", o.cluster)
			}
		}
		return nil
	}
	sums, err := listAll(ctx, c, o.cluster, o.namespace, "")
	if err != nil {
		return err
	}
	wanted := map[[2]string]bool{}
	for _, r := range rep.ServiceAccounts {
		if r.Status == importProposed {
			wanted[[2]string{r.Namespace, r.ServiceAccount}] = true
		}
	}
	var toDescribe []api.AssociationSummary
	for _, s := range sums {
		if wanted[[2]string{s.Namespace, s.ServiceAccount}] {
			toDescribe = append(toDescribe, s)
		}
	}
	current, err := describeAll(ctx, c, toDescribe)
	if err != nil {
		return err
	}
	existing := map[[2]string]api.Association{}
	for _, a := range current {
		existing[[2]string{a.Namespace, a.ServiceAccount}] = a
	}
	for i := range rep.ServiceAccounts {
		r := &rep.ServiceAccounts[i]
		e, ok := existing[[2]string{r.Namespace, r.ServiceAccount}]
		if r.Status != importProposed || !ok {
			continue
		}
		r.AssociationID = e.AssociationID
		switch {
		case e.RoleArn != r.RoleArn:
			r.Status, r.Reason = importConflict, "association "+e.AssociationID+" has role "+e.RoleArn
		case e.TargetRoleArn != "":
			// The pods would end up with the target role, not the IRSA one.
			r.Status, r.Reason = importConflict, "association "+e.AssociationID+" chains to target role "+e.TargetRoleArn
		default:
			r.Status = importExists
		}
	}
	return nil
}

// createProposed creates each PROPOSED association. A failure is recorded
// on its row and the rest are still tried: one bad row should not hide
// what happened to the others.
func (o *importOptions) createProposed(ctx context.Context, c *podidClient, rep *importReport) {
	for i := range rep.ServiceAccounts {
		r := &rep.ServiceAccounts[i]
		if r.Status != importProposed {
			continue
		}
		out, err := c.eks.CreatePodIdentityAssociation(ctx, &eks.CreatePodIdentityAssociationInput{
			ClusterName: aws.String(o.cluster), Namespace: aws.String(r.Namespace), ServiceAccount: aws.String(r.ServiceAccount),
			RoleArn: aws.String(r.RoleArn), Tags: map[string]string{importedFromTag: "irsa"},
		})
		if err != nil {
			var ee *exitError
			errors.As(o.explainError(err), &ee)
			if ee.code == exitConflict {
				// Created by someone else since the comparison.
				r.Status, r.Reason = importConflict, ee.err.Error()
				continue
			}
			r.Status, r.Reason = importFailed, ee.err.Error()
			if rep.firstFailure == nil {
				rep.firstFailure = ee
			}
			continue
		}
		r.Status, r.AssociationID = importCreated, aws.ToString(out.Association.AssociationId)
	}
}

func printImport(w io.Writer, rep *importReport) error {
	if len(rep.ServiceAccounts) == 0 {
		_, err := fmt.Fprintf(w, "No ServiceAccount is annotated %s.\n", irsaRoleAnnotation)
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAMESPACE\tSERVICE ACCOUNT\tROLE\tSTATUS\tDETAIL")
	for _, r := range rep.ServiceAccounts {
		detail := r.Reason
		if detail == "" {
			detail = r.AssociationID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.ServiceAccount, orDash(r.RoleArn), r.Status, orDash(detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.notes) > 0 {
		fmt.Fprintln(w, "\nIgnored annotations (no Pod Identity equivalent):")
		for _, n := range rep.notes {
			fmt.Fprintf(w, "  %s: %s=%s: %s\n", n.who, n.Name, n.Value, n.Note)
		}
	}
	s := rep.Summary
	fmt.Fprintln(w)
	if rep.DryRun {
		fmt.Fprintf(w, "Dry run for cluster %s: %d proposed, %d exist, %d conflict, %d skipped.\n", rep.Cluster, s.Proposed, s.Exists, s.Conflict, s.Skipped)
		if s.Proposed > 0 {
			fmt.Fprintln(w, "Run again with --create to create the PROPOSED associations.")
		}
	} else {
		fmt.Fprintf(w, "Cluster %s: %d created, %d exist, %d conflict, %d skipped, %d failed.\n", rep.Cluster, s.Created, s.Exists, s.Conflict, s.Skipped, s.Failed)
	}
	if rep.clusterMissing {
		fmt.Fprintf(w, "Cluster %s is not registered with podid: register it first (`podid cluster register`) or fix --cluster (`podid cluster list`).\n", rep.Cluster)
	}
	return nil
}
