package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/aws/aws-sdk-go-v2/service/eks/types"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/podid/podid/api"
)

// associationOptions are the flags of the association commands; each
// subcommand registers the ones it uses.
type associationOptions struct {
	clientOptions
	cluster            string
	namespace          string
	serviceAccount     string
	roleARN            string
	targetRoleARN      string
	disableSessionTags bool
	policy             string
	tags               []string
	id                 string
}

func newAssociationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "association",
		Aliases: []string{"associations", "assoc"},
		Short:   "Create, list, describe, update and delete pod identity associations",
		Long: `Manage pod identity associations on podid server through its EKS API.

Every client command signs its requests with the standard AWS credential
chain: put a podid access key (from the server's keys file) in
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or in an AWS profile (--profile).
Reads need a read-only or admin key, writes an admin key.

Exit codes: 0 ok, 1 usage or rejected parameters, 2 not found, 3 access
denied or no/unknown credentials, 4 conflict (already exists), 5 server
unreachable, unavailable or throttling, 6 other server errors.`,
	}
	cmd.AddCommand(newAssociationCreateCmd(), newAssociationListCmd(), newAssociationDescribeCmd(),
		newAssociationUpdateCmd(), newAssociationDeleteCmd())
	return cmd
}

func (o *associationOptions) clusterFlag(cmd *cobra.Command, required bool) {
	help := "cluster name as registered with podid server"
	if !required {
		help += " (default: every cluster)"
	}
	cmd.Flags().StringVar(&o.cluster, "cluster", "", help)
}

func (o *associationOptions) subjectFlags(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&o.namespace, "namespace", "", "Kubernetes namespace"+what)
	cmd.Flags().StringVar(&o.serviceAccount, "service-account", "", "Kubernetes service account name"+what)
}

func (o *associationOptions) roleFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.roleARN, "role-arn", "", "IAM role the pods get")
	f.StringVar(&o.targetRoleARN, "target-role-arn", "", "role to chain into with the first role's credentials (cross-account); \"\" on update removes it")
	f.BoolVar(&o.disableSessionTags, "disable-session-tags", false, "do not attach the six session tags (STS then gets an external id instead)")
	f.StringVar(&o.policy, "policy", "", "session policy JSON, or file://path; only with --disable-session-tags")
}

func newAssociationCreateCmd() *cobra.Command {
	o := &associationOptions{}
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an association (admin key)",
		Example: `  podid association create --cluster prod --namespace shop --service-account checkout \
    --role-arn arn:aws:iam::111122223333:role/checkout --tag team=payments`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error { return o.create(ctx, cmd.OutOrStdout()) })
	o.addClientFlags(cmd)
	o.clusterFlag(cmd, true)
	o.subjectFlags(cmd, "")
	o.roleFlags(cmd)
	cmd.Flags().StringArrayVar(&o.tags, "tag", nil, "tag key=value for the association (repeatable); tags cannot be changed later")
	return cmd
}

func (o *associationOptions) create(ctx context.Context, w io.Writer) error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--cluster", o.cluster}, {"--namespace", o.namespace}, {"--service-account", o.serviceAccount}, {"--role-arn", o.roleARN}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return usageErrorf("%s", requiredFlags(missing))
	}
	tags, err := parseTags(o.tags)
	if err != nil {
		return err
	}
	policy, err := readPolicy(o.policy)
	if err != nil {
		return err
	}
	c, err := o.connect(ctx)
	if err != nil {
		return err
	}
	in := &eks.CreatePodIdentityAssociationInput{
		ClusterName: aws.String(o.cluster), Namespace: aws.String(o.namespace), ServiceAccount: aws.String(o.serviceAccount),
		RoleArn: aws.String(o.roleARN), Tags: tags,
	}
	if o.targetRoleARN != "" {
		in.TargetRoleArn = aws.String(o.targetRoleARN)
	}
	if o.disableSessionTags {
		in.DisableSessionTags = aws.Bool(true)
	}
	if policy != "" {
		in.Policy = aws.String(policy)
	}
	out, err := c.eks.CreatePodIdentityAssociation(ctx, in)
	if err != nil {
		return err
	}
	return o.renderAssociation(w, fromSDK(out.Association))
}

func newAssociationListCmd() *cobra.Command {
	o := &associationOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List associations, of one cluster or of all",
		Long: `List associations, following every page.

The table shows each association's role, which the list API does not
return, so it describes each association (one request each). -o json and
-o yaml print the ListPodIdentityAssociations shape (summaries, no role) and
make no extra requests. Rows are sorted by cluster, namespace and service
account.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error { return o.list(ctx, cmd.OutOrStdout()) })
	o.addClientFlags(cmd)
	o.clusterFlag(cmd, false)
	o.subjectFlags(cmd, " to filter by")
	return cmd
}

// listAll returns every association summary of cluster ("" for all
// clusters) matching the filters, sorted.
func listAll(ctx context.Context, c *podidClient, cluster, namespace, serviceAccount string) ([]api.AssociationSummary, error) {
	clusters := []string{cluster}
	if cluster == "" {
		cs, err := c.admin.ListClusters(ctx)
		if err != nil {
			return nil, err
		}
		clusters = clusters[:0]
		for _, cl := range cs {
			clusters = append(clusters, cl.Name)
		}
	}
	var out []api.AssociationSummary
	for _, name := range clusters {
		in := &eks.ListPodIdentityAssociationsInput{ClusterName: aws.String(name)}
		if namespace != "" {
			in.Namespace = aws.String(namespace)
		}
		if serviceAccount != "" {
			in.ServiceAccount = aws.String(serviceAccount)
		}
		p := eks.NewListPodIdentityAssociationsPaginator(c.eks, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, err
			}
			for _, s := range page.Associations {
				out = append(out, api.AssociationSummary{
					ClusterName: aws.ToString(s.ClusterName), Namespace: aws.ToString(s.Namespace), ServiceAccount: aws.ToString(s.ServiceAccount),
					AssociationArn: aws.ToString(s.AssociationArn), AssociationID: aws.ToString(s.AssociationId), OwnerArn: aws.ToString(s.OwnerArn),
				})
			}
		}
	}
	slices.SortFunc(out, func(a, b api.AssociationSummary) int {
		return cmp.Or(cmp.Compare(a.ClusterName, b.ClusterName), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.ServiceAccount, b.ServiceAccount), cmp.Compare(a.AssociationID, b.AssociationID))
	})
	return out, nil
}

// describeAll describes every summary, a few at a time.
func describeAll(ctx context.Context, c *podidClient, sums []api.AssociationSummary) ([]api.Association, error) {
	out := make([]api.Association, len(sums))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, s := range sums {
		g.Go(func() error {
			d, err := c.eks.DescribePodIdentityAssociation(gctx, &eks.DescribePodIdentityAssociationInput{
				ClusterName: aws.String(s.ClusterName), AssociationId: aws.String(s.AssociationID)})
			if err != nil {
				return err
			}
			out[i] = fromSDK(d.Association)
			return nil
		})
	}
	return out, g.Wait()
}

func (o *associationOptions) list(ctx context.Context, w io.Writer) error {
	c, err := o.connect(ctx)
	if err != nil {
		return err
	}
	sums, err := listAll(ctx, c, o.cluster, o.namespace, o.serviceAccount)
	if err != nil {
		return err
	}
	if o.output != "table" {
		if sums == nil {
			sums = []api.AssociationSummary{}
		}
		return o.render(w, api.ListAssociationsResponse{Associations: sums}, nil)
	}
	full, err := describeAll(ctx, c, sums)
	if err != nil {
		return err
	}
	if len(full) == 0 {
		_, err := fmt.Fprintln(w, "No associations.")
		return err
	}
	return associationTable(w, full)
}

func associationTable(w io.Writer, as []api.Association) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tCLUSTER\tNAMESPACE\tSERVICE ACCOUNT\tROLE")
	for _, a := range as {
		role := a.RoleArn
		if a.TargetRoleArn != "" {
			role += " → " + a.TargetRoleArn
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.AssociationID, a.ClusterName, a.Namespace, a.ServiceAccount, role)
	}
	return tw.Flush()
}

func newAssociationDescribeCmd() *cobra.Command {
	o := &associationOptions{}
	cmd := &cobra.Command{
		Use:   "describe",
		Short: "Show one association, by --id or by --namespace and --service-account",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
		_, a, err := o.resolve(ctx)
		if err != nil {
			return err
		}
		return o.renderAssociation(cmd.OutOrStdout(), a)
	})
	o.addClientFlags(cmd)
	o.clusterFlag(cmd, true)
	o.subjectFlags(cmd, " (instead of --id)")
	cmd.Flags().StringVar(&o.id, "id", "", "association id (a-...)")
	return cmd
}

// resolve finds the association the flags name: by --id, or by
// --namespace and --service-account.
func (o *associationOptions) resolve(ctx context.Context) (*podidClient, api.Association, error) {
	if o.cluster == "" {
		return nil, api.Association{}, usageErrorf("--cluster is required")
	}
	if o.id == "" && (o.namespace == "" || o.serviceAccount == "") {
		return nil, api.Association{}, usageErrorf("name the association with --id, or with --namespace and --service-account")
	}
	c, err := o.connect(ctx)
	if err != nil {
		return nil, api.Association{}, err
	}
	id := o.id
	if id == "" {
		sums, err := listAll(ctx, c, o.cluster, o.namespace, o.serviceAccount)
		if err != nil {
			return nil, api.Association{}, err
		}
		if len(sums) == 0 {
			return nil, api.Association{}, &exitError{code: exitNotFound,
				err:  fmt.Errorf("no association for service account %s in namespace %s of cluster %s", o.serviceAccount, o.namespace, o.cluster),
				hint: fmt.Sprintf("create one: podid association create --cluster %s --namespace %s --service-account %s --role-arn <role ARN>", o.cluster, o.namespace, o.serviceAccount)}
		}
		id = sums[0].AssociationID
	}
	d, err := c.eks.DescribePodIdentityAssociation(ctx, &eks.DescribePodIdentityAssociationInput{ClusterName: aws.String(o.cluster), AssociationId: aws.String(id)})
	if err != nil {
		return nil, api.Association{}, err
	}
	return c, fromSDK(d.Association), nil
}

func newAssociationUpdateCmd() *cobra.Command {
	o := &associationOptions{}
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Change an association's role, target role, session tags or policy (admin key)",
		Long: `Change an association's role, target role, session tags setting or session
policy. Only the flags given are changed. Tags cannot be changed: the EKS API
has no way to; delete and create the association instead.`,
		Example: `  podid association update --cluster prod --id a-0123456789abcdefg --role-arn arn:aws:iam::111122223333:role/new
  podid association update --cluster prod --namespace shop --service-account checkout --target-role-arn ""`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
		f := cmd.Flags()
		in := &eks.UpdatePodIdentityAssociationInput{}
		if f.Changed("role-arn") {
			in.RoleArn = aws.String(o.roleARN)
		}
		if f.Changed("target-role-arn") {
			in.TargetRoleArn = aws.String(o.targetRoleARN)
		}
		if f.Changed("disable-session-tags") {
			in.DisableSessionTags = aws.Bool(o.disableSessionTags)
		}
		if f.Changed("policy") {
			p, err := readPolicy(o.policy)
			if err != nil {
				return err
			}
			in.Policy = aws.String(p)
		}
		if in.RoleArn == nil && in.TargetRoleArn == nil && in.DisableSessionTags == nil && in.Policy == nil {
			return usageErrorf("nothing to change: give --role-arn, --target-role-arn, --disable-session-tags or --policy")
		}
		c, a, err := o.resolve(ctx)
		if err != nil {
			return err
		}
		in.ClusterName, in.AssociationId = aws.String(a.ClusterName), aws.String(a.AssociationID)
		out, err := c.eks.UpdatePodIdentityAssociation(ctx, in)
		if err != nil {
			return err
		}
		return o.renderAssociation(cmd.OutOrStdout(), fromSDK(out.Association))
	})
	o.addClientFlags(cmd)
	o.clusterFlag(cmd, true)
	o.subjectFlags(cmd, " (instead of --id)")
	cmd.Flags().StringVar(&o.id, "id", "", "association id (a-...)")
	o.roleFlags(cmd)
	return cmd
}

func newAssociationDeleteCmd() *cobra.Command {
	o := &associationOptions{}
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete an association, by --id or by --namespace and --service-account (admin key)",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error {
		c, a, err := o.resolve(ctx)
		if err != nil {
			return err
		}
		out, err := c.eks.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{
			ClusterName: aws.String(a.ClusterName), AssociationId: aws.String(a.AssociationID)})
		if err != nil {
			return err
		}
		deleted := fromSDK(out.Association)
		return o.render(cmd.OutOrStdout(), api.AssociationResponse{Association: deleted}, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "Deleted association %s (cluster %s, %s/%s, role %s).\n",
				deleted.AssociationID, deleted.ClusterName, deleted.Namespace, deleted.ServiceAccount, deleted.RoleArn)
			return err
		})
	})
	o.addClientFlags(cmd)
	o.clusterFlag(cmd, true)
	o.subjectFlags(cmd, " (instead of --id)")
	cmd.Flags().StringVar(&o.id, "id", "", "association id (a-...)")
	return cmd
}

// renderAssociation prints one association: the EKS shape for -o json and
// yaml, a row and its details for people.
func (o *clientOptions) renderAssociation(w io.Writer, a api.Association) error {
	return o.render(w, api.AssociationResponse{Association: a}, func(w io.Writer) error {
		if err := associationTable(w, []api.Association{a}); err != nil {
			return err
		}
		fmt.Fprintln(w)
		tw := newTable(w)
		fmt.Fprintf(tw, "Association ARN:\t%s\n", a.AssociationArn)
		if a.TargetRoleArn != "" {
			fmt.Fprintf(tw, "Target role:\t%s\n", a.TargetRoleArn)
			fmt.Fprintf(tw, "External ID:\t%s (sent when assuming the target role)\n", a.ExternalID)
		}
		if a.DisableSessionTags {
			fmt.Fprintf(tw, "Session tags:\tdisabled\n")
		} else {
			fmt.Fprintf(tw, "Session tags:\tenabled\n")
		}
		if a.Policy != "" {
			fmt.Fprintf(tw, "Session policy:\t%s\n", a.Policy)
		}
		fmt.Fprintf(tw, "Tags:\t%s\n", formatTags(a.Tags))
		fmt.Fprintf(tw, "Created:\t%s\n", formatTime(a.CreatedAt.Time()))
		fmt.Fprintf(tw, "Modified:\t%s\n", formatTime(a.ModifiedAt.Time()))
		return tw.Flush()
	})
}

// fromSDK converts the SDK's association to the wire shape podid's api
// package defines, which is what -o json prints.
func fromSDK(a *types.PodIdentityAssociation) api.Association {
	if a == nil {
		return api.Association{}
	}
	tags := maps.Clone(a.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	return api.Association{
		ClusterName: aws.ToString(a.ClusterName), Namespace: aws.ToString(a.Namespace), ServiceAccount: aws.ToString(a.ServiceAccount),
		RoleArn: aws.ToString(a.RoleArn), AssociationArn: aws.ToString(a.AssociationArn), AssociationID: aws.ToString(a.AssociationId),
		Tags: tags, CreatedAt: api.Epoch(aws.ToTime(a.CreatedAt)), ModifiedAt: api.Epoch(aws.ToTime(a.ModifiedAt)),
		OwnerArn: aws.ToString(a.OwnerArn), DisableSessionTags: aws.ToBool(a.DisableSessionTags),
		TargetRoleArn: aws.ToString(a.TargetRoleArn), ExternalID: aws.ToString(a.ExternalId), Policy: aws.ToString(a.Policy),
	}
}

// parseTags reads repeated --tag key=value flags.
func parseTags(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	tags := make(map[string]string, len(flags))
	for _, t := range flags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, usageErrorf("--tag %q: use key=value", t)
		}
		if _, dup := tags[k]; dup {
			return nil, usageErrorf("--tag %q: key %s given twice", t, k)
		}
		tags[k] = v
	}
	return tags, nil
}

// readPolicy returns the policy flag's JSON, reading file://path like the
// AWS CLI does.
func readPolicy(p string) (string, error) {
	path, ok := strings.CutPrefix(p, "file://")
	if !ok {
		return p, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("--policy: %v", err)
	}
	return strings.TrimSpace(string(raw)), nil
}

func formatTags(tags map[string]string) string {
	if len(tags) == 0 {
		return "-"
	}
	keys := slices.Sorted(maps.Keys(tags))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + tags[k]
	}
	return strings.Join(parts, ", ")
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// requiredFlags says "--a, --b and --c are required".
func requiredFlags(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0] + " is required"
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " are required"
}
