package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eks"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/api"
)

// ownerTag marks an association as created by an AssociationSet; its value
// is the set's metadata.name. --prune deletes only associations whose tag
// names the set being applied.
const ownerTag = "podid.io/owner"

// The AssociationSet file's apiVersion and kind.
const (
	setAPIVersion = "podid.io/v1"
	setKind       = "AssociationSet"
)

// associationSet is the declarative file podid apply reads.
type associationSet struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Associations []desiredAssociation `json:"associations"`
	} `json:"spec"`
}

// desiredAssociation is one entry of spec.associations.
type desiredAssociation struct {
	Cluster            string            `json:"cluster"`
	Namespace          string            `json:"namespace"`
	ServiceAccount     string            `json:"serviceAccount"`
	RoleArn            string            `json:"roleArn"`
	TargetRoleArn      string            `json:"targetRoleArn,omitempty"`
	DisableSessionTags bool              `json:"disableSessionTags,omitempty"`
	Policy             string            `json:"policy,omitempty"`
	Tags               map[string]string `json:"tags,omitempty"`
}

func (d desiredAssociation) key() assocKey {
	return assocKey{d.Cluster, d.Namespace, d.ServiceAccount}
}

// assocKey is what makes an association unique on the server.
type assocKey struct{ cluster, namespace, serviceAccount string }

func (k assocKey) String() string { return k.cluster + "/" + k.namespace + "/" + k.serviceAccount }

func compareKeys(a, b assocKey) int {
	return cmp.Or(cmp.Compare(a.cluster, b.cluster), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.serviceAccount, b.serviceAccount))
}

type applyOptions struct {
	clientOptions
	file   string
	dryRun bool
	prune  bool
}

func newApplyCmd() *cobra.Command {
	o := &applyOptions{}
	cmd := &cobra.Command{
		Use:   "apply -f associations.yaml",
		Short: "Reconcile associations with a declarative AssociationSet file",
		Long: `Make podid server's associations match an AssociationSet file, for any number
of clusters, namespaces and service accounts:

  apiVersion: podid.io/v1
  kind: AssociationSet
  metadata:
    name: shop                # owner recorded on what this file creates
  spec:
    associations:
    - cluster: prod
      namespace: shop
      serviceAccount: checkout
      roleArn: arn:aws:iam::111122223333:role/checkout
      targetRoleArn: arn:aws:iam::444455556666:role/checkout   # optional
      disableSessionTags: false                                 # optional
      policy: '{"Version":"2012-10-17","Statement":[...]}'      # optional, needs disableSessionTags
      tags: {team: payments}                                    # optional

Missing associations are created with the tag podid.io/owner=<metadata.name>;
ones that differ in roleArn, targetRoleArn, disableSessionTags or policy are
updated in place; equal ones are left alone, so a rerun changes nothing.
It prints the changes (+ create, ~ update field: old → new, - delete) and a
summary. --dry-run prints them and changes nothing.

--prune also deletes associations whose podid.io/owner tag is this set's
name and that are no longer in the file, in every cluster. Associations the
set does not own are never changed or deleted: if one is in the way with
other settings, it is reported as a conflict (exit code 4) and the rest is
applied.

Tags cannot be changed in place (the EKS API has no call for it): a tag
difference is reported, not applied; delete the association and apply
again to recreate it with the new tags.`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = o.clientRunE(func(ctx context.Context, cmd *cobra.Command) error { return o.run(ctx, cmd.OutOrStdout()) })
	o.addClientFlags(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.file, "filename", "f", "", "the AssociationSet YAML or JSON file, - for stdin (required)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the changes without making them")
	f.BoolVar(&o.prune, "prune", false, "delete associations this set created that are no longer in the file")
	return cmd
}

func (o *applyOptions) run(ctx context.Context, w io.Writer) error {
	if o.file == "" {
		return usageErrorf("-f is required: the AssociationSet file")
	}
	var raw []byte
	var err error
	if o.file == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(o.file)
	}
	if err != nil {
		return usageErrorf("reading %s: %v", o.file, err)
	}
	set, err := parseAssociationSet(raw)
	if err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", o.file, err)}
	}
	c, err := o.connect(ctx)
	if err != nil {
		return err
	}
	p, err := planApply(ctx, c, set, o.prune)
	if err != nil {
		return err
	}
	p.DryRun = o.dryRun
	if !o.dryRun {
		err = p.execute(ctx, c, set.Metadata.Name)
	}
	if rerr := o.render(w, p, p.print); rerr != nil {
		return rerr
	}
	if err != nil {
		return err
	}
	if p.Summary.Conflict > 0 {
		return &exitError{code: exitConflict, err: fmt.Errorf("%d association(s) in the file conflict with ones this set does not own; they were left alone", p.Summary.Conflict)}
	}
	return nil
}

// Kubernetes and IAM name rules, checked here so a file's mistakes are all
// reported at once rather than one server error at a time.
var (
	setNameRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	clusterRE     = regexp.MustCompile(`^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$`)
	namespaceRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	saRE          = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	roleARNFileRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+$`)
)

// parseAssociationSet reads and validates a file. Errors name the field by
// its path (spec.associations[2].roleArn), not by line, and all of them are
// reported together.
func parseAssociationSet(raw []byte) (*associationSet, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not valid YAML or JSON: %w", err)
	}
	var errs []string
	bad := func(path, format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	set := &associationSet{}

	top, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New("the file must be an AssociationSet object (apiVersion, kind, metadata, spec)")
	}
	checkKeys(top, "", []string{"apiVersion", "kind", "metadata", "spec"}, bad)
	set.APIVersion = stringField(top, "apiVersion", "apiVersion", true, bad)
	if set.APIVersion != "" && set.APIVersion != setAPIVersion {
		bad("apiVersion", "must be %s, got %q", setAPIVersion, set.APIVersion)
	}
	set.Kind = stringField(top, "kind", "kind", true, bad)
	if set.Kind != "" && set.Kind != setKind {
		bad("kind", "must be %s, got %q", setKind, set.Kind)
	}
	if md, ok := objectField(top, "metadata", "metadata", true, bad); ok {
		checkKeys(md, "metadata", []string{"name"}, bad)
		set.Metadata.Name = stringField(md, "name", "metadata.name", true, bad)
		if n := set.Metadata.Name; n != "" && (len(n) > 63 || !setNameRE.MatchString(n)) {
			bad("metadata.name", "%q must be lowercase letters, digits, '-' and '.', at most 63 characters (it becomes the %s tag)", n, ownerTag)
		}
	}
	spec, ok := objectField(top, "spec", "spec", true, bad)
	if ok {
		checkKeys(spec, "spec", []string{"associations"}, bad)
		list, present := spec["associations"]
		items, isList := list.([]any)
		switch {
		case !present || list == nil:
			bad("spec.associations", "required (an empty list [] is allowed)")
		case !isList:
			bad("spec.associations", "must be a list")
		}
		seen := map[assocKey]int{}
		for i, item := range items {
			path := "spec.associations[" + strconv.Itoa(i) + "]"
			m, ok := item.(map[string]any)
			if !ok {
				bad(path, "must be an object")
				continue
			}
			checkKeys(m, path, []string{"cluster", "namespace", "serviceAccount", "roleArn", "targetRoleArn", "disableSessionTags", "policy", "tags"}, bad)
			d := desiredAssociation{
				Cluster:        stringField(m, "cluster", path+".cluster", true, bad),
				Namespace:      stringField(m, "namespace", path+".namespace", true, bad),
				ServiceAccount: stringField(m, "serviceAccount", path+".serviceAccount", true, bad),
				RoleArn:        stringField(m, "roleArn", path+".roleArn", true, bad),
				TargetRoleArn:  stringField(m, "targetRoleArn", path+".targetRoleArn", false, bad),
				Policy:         strings.TrimSpace(stringField(m, "policy", path+".policy", false, bad)),
			}
			if v, ok := m["disableSessionTags"]; ok {
				if b, isBool := v.(bool); isBool {
					d.DisableSessionTags = b
				} else {
					bad(path+".disableSessionTags", "must be true or false")
				}
			}
			if tm, ok := objectField(m, "tags", path+".tags", false, bad); ok {
				d.Tags = map[string]string{}
				for _, k := range slices.Sorted(maps.Keys(tm)) {
					s, isString := tm[k].(string)
					if !isString {
						bad(path+".tags."+k, "must be a string (quote numbers and booleans)")
						continue
					}
					if k == ownerTag {
						bad(path+".tags."+k, "is set by podid apply from metadata.name; remove it")
						continue
					}
					d.Tags[k] = s
				}
			}
			switch {
			case d.Cluster != "" && !clusterRE.MatchString(d.Cluster):
				bad(path+".cluster", "%q is not a cluster name (letters, digits, '-' and '_')", d.Cluster)
			case d.Namespace != "" && !namespaceRE.MatchString(d.Namespace):
				bad(path+".namespace", "%q is not a Kubernetes namespace name", d.Namespace)
			case d.ServiceAccount != "" && (len(d.ServiceAccount) > 253 || !saRE.MatchString(d.ServiceAccount)):
				bad(path+".serviceAccount", "%q is not a Kubernetes service account name", d.ServiceAccount)
			}
			if d.RoleArn != "" && !roleARNFileRE.MatchString(d.RoleArn) {
				bad(path+".roleArn", "%q is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)", d.RoleArn)
			}
			if d.TargetRoleArn != "" && !roleARNFileRE.MatchString(d.TargetRoleArn) {
				bad(path+".targetRoleArn", "%q is not an IAM role ARN", d.TargetRoleArn)
			}
			if d.Policy != "" {
				var pd map[string]any
				switch {
				case !d.DisableSessionTags:
					bad(path+".policy", "needs disableSessionTags: true")
				case json.Unmarshal([]byte(d.Policy), &pd) != nil:
					bad(path+".policy", "is not a JSON policy document")
				}
			}
			if d.Cluster != "" && d.Namespace != "" && d.ServiceAccount != "" {
				if j, dup := seen[d.key()]; dup {
					bad(path, "%s is already in spec.associations[%d]", d.key(), j)
				} else {
					seen[d.key()] = i
				}
			}
			set.Spec.Associations = append(set.Spec.Associations, d)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("not a valid %s:\n  %s", setKind, strings.Join(errs, "\n  "))
	}
	return set, nil
}

// checkKeys reports keys of m that are not in known, sorted so the message
// is stable.
func checkKeys(m map[string]any, path string, known []string, bad func(string, string, ...any)) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			p := k
			if path != "" {
				p = path + "." + k
			}
			bad(p, "unknown field (known: %s)", strings.Join(known, ", "))
		}
	}
}

func stringField(m map[string]any, key, path string, required bool, bad func(string, string, ...any)) string {
	v, ok := m[key]
	if !ok || v == nil {
		if required {
			bad(path, "required")
		}
		return ""
	}
	s, ok := v.(string)
	if !ok {
		bad(path, "must be a string")
		return ""
	}
	if s == "" && required {
		bad(path, "must not be empty")
	}
	return s
}

func objectField(m map[string]any, key, path string, required bool, bad func(string, string, ...any)) (map[string]any, bool) {
	v, ok := m[key]
	if !ok || v == nil {
		if required {
			bad(path, "required")
		}
		return nil, false
	}
	obj, ok := v.(map[string]any)
	if !ok {
		bad(path, "must be an object")
		return nil, false
	}
	return obj, true
}

// plan is what apply does, and what it prints.
type plan struct {
	Name    string   `json:"name"`
	DryRun  bool     `json:"dryRun"`
	Changes []change `json:"changes"`
	Summary summary  `json:"summary"`
	// Applied counts the changes made so far (not with --dry-run).
	Applied int `json:"applied"`

	desired map[assocKey]desiredAssociation
}

type summary struct {
	Create    int `json:"create"`
	Update    int `json:"update"`
	Delete    int `json:"delete"`
	Unchanged int `json:"unchanged"`
	Conflict  int `json:"conflict"`
	Warning   int `json:"warning"`
}

// Change actions.
const (
	actionCreate   = "create"
	actionUpdate   = "update"
	actionDelete   = "delete"
	actionConflict = "conflict"
	actionWarning  = "warning"
)

type change struct {
	Action         string        `json:"action"`
	Cluster        string        `json:"cluster"`
	Namespace      string        `json:"namespace"`
	ServiceAccount string        `json:"serviceAccount"`
	AssociationID  string        `json:"associationId,omitempty"`
	Fields         []fieldChange `json:"fields,omitempty"`
	Message        string        `json:"message,omitempty"`
}

func (c change) key() assocKey { return assocKey{c.Cluster, c.Namespace, c.ServiceAccount} }

type fieldChange struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

// planApply reads what the server has and compares it with the set.
func planApply(ctx context.Context, c *podidClient, set *associationSet, prune bool) (*plan, error) {
	name := set.Metadata.Name
	p := &plan{Name: name, Changes: []change{}, desired: map[assocKey]desiredAssociation{}}
	wanted := map[string]bool{}
	for _, d := range set.Spec.Associations {
		p.desired[d.key()] = d
		wanted[d.Cluster] = true
	}
	clusters, err := c.admin.ListClusters(ctx)
	if err != nil {
		return nil, err
	}
	registered := map[string]bool{}
	for _, cl := range clusters {
		registered[cl.Name] = true
	}
	var missing []string
	for cl := range wanted {
		if !registered[cl] {
			missing = append(missing, cl)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, &exitError{code: exitNotFound, err: fmt.Errorf("the file names clusters podid server does not know: %s", strings.Join(missing, ", ")),
			hint: "register them first (`podid cluster register`) or fix the names; `podid cluster list` shows what is registered"}
	}

	// Read every association of the clusters involved. Tags are only in
	// Describe, and --prune needs them for every association.
	var sums []api.AssociationSummary
	for _, cl := range clusters {
		if !wanted[cl.Name] && !prune {
			continue
		}
		s, err := listAll(ctx, c, cl.Name, "", "")
		if err != nil {
			return nil, err
		}
		sums = append(sums, s...)
	}
	var toDescribe []api.AssociationSummary
	for _, s := range sums {
		if _, ok := p.desired[assocKey{s.ClusterName, s.Namespace, s.ServiceAccount}]; ok || prune {
			toDescribe = append(toDescribe, s)
		}
	}
	current, err := describeAll(ctx, c, toDescribe)
	if err != nil {
		return nil, err
	}
	existing := map[assocKey]api.Association{}
	for _, a := range current {
		existing[assocKey{a.ClusterName, a.Namespace, a.ServiceAccount}] = a
	}

	for _, d := range set.Spec.Associations {
		k := d.key()
		e, ok := existing[k]
		ch := change{Cluster: d.Cluster, Namespace: d.Namespace, ServiceAccount: d.ServiceAccount}
		if !ok {
			ch.Action = actionCreate
			ch.Fields = createFields(d, name)
			p.add(ch)
			continue
		}
		ch.AssociationID = e.AssociationID
		fields := specDiff(e, d)
		owner := e.Tags[ownerTag]
		switch {
		case owner != name && len(fields) == 0:
			p.Summary.Unchanged++
		case owner != name:
			ch.Action, ch.Fields = actionConflict, fields
			if owner == "" {
				ch.Message = "exists with other settings and was not created by this set; delete it or take it out of the file"
			} else {
				ch.Message = fmt.Sprintf("exists with other settings and is owned by AssociationSet %q; change it there or take it out of this file", owner)
			}
			p.add(ch)
		default:
			if len(fields) > 0 {
				ch.Action, ch.Fields = actionUpdate, fields
				p.add(ch)
			} else {
				p.Summary.Unchanged++
			}
			if td := tagDiff(e.Tags, withOwner(d.Tags, name)); len(td) > 0 {
				p.add(change{Action: actionWarning, Cluster: d.Cluster, Namespace: d.Namespace, ServiceAccount: d.ServiceAccount,
					AssociationID: e.AssociationID, Fields: td,
					Message: "tags differ but cannot be changed in place; delete the association and apply again to recreate it"})
			}
		}
	}
	if prune {
		for k, e := range existing {
			if _, keep := p.desired[k]; keep || e.Tags[ownerTag] != name {
				continue
			}
			p.add(change{Action: actionDelete, Cluster: k.cluster, Namespace: k.namespace, ServiceAccount: k.serviceAccount,
				AssociationID: e.AssociationID, Fields: []fieldChange{{Field: "roleArn", Old: e.RoleArn}},
				Message: "owned by this set and no longer in the file"})
		}
	}
	slices.SortStableFunc(p.Changes, func(a, b change) int { return compareKeys(a.key(), b.key()) })
	return p, nil
}

func (p *plan) add(c change) {
	p.Changes = append(p.Changes, c)
	switch c.Action {
	case actionCreate:
		p.Summary.Create++
	case actionUpdate:
		p.Summary.Update++
	case actionDelete:
		p.Summary.Delete++
	case actionConflict:
		p.Summary.Conflict++
	case actionWarning:
		p.Summary.Warning++
	}
}

func withOwner(tags map[string]string, name string) map[string]string {
	out := maps.Clone(tags)
	if out == nil {
		out = map[string]string{}
	}
	out[ownerTag] = name
	return out
}

func createFields(d desiredAssociation, owner string) []fieldChange {
	fs := []fieldChange{{Field: "roleArn", New: d.RoleArn}}
	if d.TargetRoleArn != "" {
		fs = append(fs, fieldChange{Field: "targetRoleArn", New: d.TargetRoleArn})
	}
	if d.DisableSessionTags {
		fs = append(fs, fieldChange{Field: "disableSessionTags", New: "true"})
	}
	if d.Policy != "" {
		fs = append(fs, fieldChange{Field: "policy", New: d.Policy})
	}
	fs = append(fs, fieldChange{Field: "tags", New: formatTags(withOwner(d.Tags, owner))})
	return fs
}

// specDiff lists the updatable fields in which e differs from d.
func specDiff(e api.Association, d desiredAssociation) []fieldChange {
	var fs []fieldChange
	if e.RoleArn != d.RoleArn {
		fs = append(fs, fieldChange{"roleArn", e.RoleArn, d.RoleArn})
	}
	if e.TargetRoleArn != d.TargetRoleArn {
		fs = append(fs, fieldChange{"targetRoleArn", e.TargetRoleArn, d.TargetRoleArn})
	}
	if e.DisableSessionTags != d.DisableSessionTags {
		fs = append(fs, fieldChange{"disableSessionTags", strconv.FormatBool(e.DisableSessionTags), strconv.FormatBool(d.DisableSessionTags)})
	}
	if !samePolicy(e.Policy, d.Policy) {
		fs = append(fs, fieldChange{"policy", e.Policy, d.Policy})
	}
	return fs
}

// samePolicy compares policies as JSON, so reformatting the file is not a
// change.
func samePolicy(a, b string) bool {
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if a == b {
		return true
	}
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func tagDiff(have, want map[string]string) []fieldChange {
	keys := slices.Concat(slices.Collect(maps.Keys(have)), slices.Collect(maps.Keys(want)))
	slices.Sort(keys)
	var fs []fieldChange
	for _, k := range slices.Compact(keys) {
		h, inHave := have[k]
		w, inWant := want[k]
		if inHave != inWant || h != w {
			fs = append(fs, fieldChange{Field: "tags." + k, Old: h, New: w})
		}
	}
	return fs
}

// execute makes the planned changes: updates, then creates, then deletes.
// It stops at the first failure; a rerun picks up from there.
func (p *plan) execute(ctx context.Context, c *podidClient, owner string) error {
	order := []string{actionUpdate, actionCreate, actionDelete}
	total := p.Summary.Update + p.Summary.Create + p.Summary.Delete
	for _, action := range order {
		for _, ch := range p.Changes {
			if ch.Action != action {
				continue
			}
			if err := p.apply(ctx, c, ch, owner); err != nil {
				return fmt.Errorf("%s %s failed after %d of %d changes: %w", ch.Action, ch.key(), p.Applied, total, err)
			}
			p.Applied++
		}
	}
	return nil
}

func (p *plan) apply(ctx context.Context, c *podidClient, ch change, owner string) error {
	switch ch.Action {
	case actionCreate:
		d := p.desired[ch.key()]
		in := &eks.CreatePodIdentityAssociationInput{
			ClusterName: aws.String(d.Cluster), Namespace: aws.String(d.Namespace), ServiceAccount: aws.String(d.ServiceAccount),
			RoleArn: aws.String(d.RoleArn), Tags: withOwner(d.Tags, owner),
		}
		if d.TargetRoleArn != "" {
			in.TargetRoleArn = aws.String(d.TargetRoleArn)
		}
		if d.DisableSessionTags {
			in.DisableSessionTags = aws.Bool(true)
		}
		if d.Policy != "" {
			in.Policy = aws.String(d.Policy)
		}
		_, err := c.eks.CreatePodIdentityAssociation(ctx, in)
		return err
	case actionUpdate:
		d := p.desired[ch.key()]
		in := &eks.UpdatePodIdentityAssociationInput{ClusterName: aws.String(d.Cluster), AssociationId: aws.String(ch.AssociationID)}
		for _, f := range ch.Fields {
			switch f.Field {
			case "roleArn":
				in.RoleArn = aws.String(d.RoleArn)
			case "targetRoleArn":
				in.TargetRoleArn = aws.String(d.TargetRoleArn)
			case "disableSessionTags":
				in.DisableSessionTags = aws.Bool(d.DisableSessionTags)
			case "policy":
				in.Policy = aws.String(d.Policy)
			}
		}
		_, err := c.eks.UpdatePodIdentityAssociation(ctx, in)
		return err
	case actionDelete:
		_, err := c.eks.DeletePodIdentityAssociation(ctx, &eks.DeletePodIdentityAssociationInput{
			ClusterName: aws.String(ch.Cluster), AssociationId: aws.String(ch.AssociationID)})
		return err
	}
	return nil
}

// print writes the diff and the summary for people.
func (p *plan) print(w io.Writer) error {
	ew := &errWriter{w: w}
	for _, ch := range p.Changes {
		id := ""
		if ch.AssociationID != "" {
			id = " (" + ch.AssociationID + ")"
		}
		switch ch.Action {
		case actionCreate:
			ew.printf("+ create %s\n", ch.key())
			for _, f := range ch.Fields {
				ew.printf("    %s: %s\n", f.Field, f.New)
			}
		case actionUpdate:
			ew.printf("~ update %s%s\n", ch.key(), id)
			for _, f := range ch.Fields {
				ew.printf("    %s: %s → %s\n", f.Field, orNone(f.Old), orNone(f.New))
			}
		case actionDelete:
			ew.printf("- delete %s%s: %s\n", ch.key(), id, ch.Message)
			for _, f := range ch.Fields {
				ew.printf("    %s: %s\n", f.Field, f.Old)
			}
		case actionConflict, actionWarning:
			ew.printf("! %s %s%s: %s\n", ch.Action, ch.key(), id, ch.Message)
			for _, f := range ch.Fields {
				ew.printf("    %s: %s → %s\n", f.Field, orNone(f.Old), orNone(f.New))
			}
		}
	}
	s := p.Summary
	ew.printf("AssociationSet %s: %d to create, %d to update, %d to delete, %d unchanged", p.Name, s.Create, s.Update, s.Delete, s.Unchanged)
	if s.Conflict > 0 {
		ew.printf(", %d conflict(s)", s.Conflict)
	}
	if s.Warning > 0 {
		ew.printf(", %d warning(s)", s.Warning)
	}
	ew.printf(".\n")
	switch {
	case p.DryRun:
		ew.printf("Dry run: nothing was changed.\n")
	case s.Create+s.Update+s.Delete == 0:
		ew.printf("Nothing to do.\n")
	default:
		ew.printf("Applied %d of %d changes.\n", p.Applied, s.Create+s.Update+s.Delete)
	}
	return ew.err
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
