package server

import (
	"encoding/base64"
	"maps"
	"strconv"

	"github.com/podid/podid/api"
	"github.com/podid/podid/internal/identity"
)

func (s *Server) assumeRole(r *request) (any, error) {
	var in api.AssumeRoleForPodIdentityRequest
	if err := decode(r.body, &in); err != nil {
		return nil, err
	}
	res, err := s.svc.AssumeRoleForPodIdentity(r.Context(), identity.AssumeInput{
		Cluster:    r.PathValue("clusterName"),
		Token:      in.Token,
		NodeName:   in.EksNodeName,
		InstanceID: in.InstanceID,
		Zone:       in.Zone,
	})
	if err != nil {
		return nil, err
	}
	c := res.AssumedRole.Credentials
	return api.AssumeRoleForPodIdentityResponse{
		AssumedRoleUser: api.AssumedRoleUser{Arn: res.AssumedRole.ARN, AssumeRoleID: res.AssumedRole.AssumedRoleID},
		Audience:        res.Audience,
		Credentials: api.Credentials{
			AccessKeyID:     c.AccessKeyID,
			Expiration:      api.Epoch(c.Expiration),
			SecretAccessKey: c.SecretAccessKey,
			SessionToken:    c.SessionToken,
		},
		PodIdentityAssociation: api.PodIdentityAssociation{AssociationArn: res.AssociationARN, AssociationID: res.AssociationID},
		Subject:                api.Subject{Namespace: res.Namespace, ServiceAccount: res.ServiceAccount},
	}, nil
}

func (s *Server) association(a *identity.Association) api.AssociationResponse {
	tags := maps.Clone(a.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	return api.AssociationResponse{Association: api.Association{
		ClusterName:        a.Cluster,
		Namespace:          a.Namespace,
		ServiceAccount:     a.ServiceAccount,
		RoleArn:            a.RoleARN,
		AssociationArn:     s.svc.AssociationARN(a),
		AssociationID:      a.ID,
		Tags:               tags,
		CreatedAt:          api.Epoch(a.CreatedAt),
		ModifiedAt:         api.Epoch(a.ModifiedAt),
		OwnerArn:           a.OwnerARN,
		DisableSessionTags: a.DisableSessionTags,
		TargetRoleArn:      a.TargetRoleARN,
		ExternalID:         a.ExternalID,
		Policy:             a.Policy,
	}}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func (s *Server) createAssociation(r *request) (any, error) {
	var in api.CreateAssociationRequest
	if err := decode(r.body, &in); err != nil {
		return nil, err
	}
	a, err := s.svc.CreateAssociation(r.Context(), identity.CreateAssociationInput{
		Cluster:            r.PathValue("clusterName"),
		Namespace:          deref(in.Namespace),
		ServiceAccount:     deref(in.ServiceAccount),
		RoleARN:            deref(in.RoleArn),
		TargetRoleARN:      deref(in.TargetRoleArn),
		DisableSessionTags: deref(in.DisableSessionTags),
		Policy:             deref(in.Policy),
		Tags:               in.Tags,
		ClientRequestToken: deref(in.ClientRequestToken),
	})
	if err != nil {
		return nil, err
	}
	return s.association(a), nil
}

func (s *Server) describeAssociation(r *request) (any, error) {
	a, err := s.svc.DescribeAssociation(r.Context(), r.PathValue("clusterName"), r.PathValue("associationId"))
	if err != nil {
		return nil, err
	}
	return s.association(a), nil
}

func (s *Server) updateAssociation(r *request) (any, error) {
	var in api.UpdateAssociationRequest
	if err := decode(r.body, &in); err != nil {
		return nil, err
	}
	a, err := s.svc.UpdateAssociation(r.Context(), identity.UpdateAssociationInput{
		Cluster:            r.PathValue("clusterName"),
		ID:                 r.PathValue("associationId"),
		RoleARN:            in.RoleArn,
		TargetRoleARN:      in.TargetRoleArn,
		DisableSessionTags: in.DisableSessionTags,
		Policy:             in.Policy,
		ClientRequestToken: deref(in.ClientRequestToken),
	})
	if err != nil {
		return nil, err
	}
	return s.association(a), nil
}

func (s *Server) deleteAssociation(r *request) (any, error) {
	a, err := s.svc.DeleteAssociation(r.Context(), r.PathValue("clusterName"), r.PathValue("associationId"))
	if err != nil {
		return nil, err
	}
	return s.association(a), nil
}

// intParam reads an optional integer query parameter.
func intParam(r *request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, identity.Errorf(identity.CodeInvalidParameter, "%s must be an integer, got %q", name, v)
	}
	return n, nil
}

func (s *Server) listAssociations(r *request) (any, error) {
	max, err := intParam(r, "maxResults")
	if err != nil {
		return nil, err
	}
	if r.URL.Query().Has("maxResults") && max == 0 {
		return nil, identity.Errorf(identity.CodeInvalidParameter, "maxResults must be between 1 and 100, got 0")
	}
	q := r.URL.Query()
	as, next, err := s.svc.ListAssociations(r.Context(), identity.ListAssociationsInput{
		Cluster:        r.PathValue("clusterName"),
		Namespace:      q.Get("namespace"),
		ServiceAccount: q.Get("serviceAccount"),
		MaxResults:     max,
		NextToken:      q.Get("nextToken"),
	})
	if err != nil {
		return nil, err
	}
	out := api.ListAssociationsResponse{Associations: make([]api.AssociationSummary, 0, len(as))}
	for i := range as {
		a := &as[i]
		out.Associations = append(out.Associations, api.AssociationSummary{
			ClusterName:    a.Cluster,
			Namespace:      a.Namespace,
			ServiceAccount: a.ServiceAccount,
			AssociationArn: s.svc.AssociationARN(a),
			AssociationID:  a.ID,
			OwnerArn:       a.OwnerARN,
		})
	}
	if next != "" {
		out.NextToken = &next
	}
	return out, nil
}

// --- admin: clusters ---

func (s *Server) cluster(c *identity.Cluster) api.Cluster {
	k := c.Keys
	return api.Cluster{
		Name:   c.Name,
		Issuer: c.Issuer,
		Arn:    s.svc.ClusterARN(c.Name),
		// The bearer token is write-only: it is never sent back.
		Keys:       api.KeySource{Kind: k.Kind, JWKS: k.JWKS, Path: k.Path, URL: k.URL, CACert: k.CACert, PEM: k.PEM, LiveCheck: k.LiveCheck},
		CreatedAt:  api.Epoch(c.CreatedAt),
		ModifiedAt: api.Epoch(c.ModifiedAt),
	}
}

func (s *Server) clusterInput(r *request, name string) (identity.ClusterInput, error) {
	var in api.Cluster
	if err := decode(r.body, &in); err != nil {
		return identity.ClusterInput{}, err
	}
	if name == "" {
		name = in.Name
	} else if in.Name != "" && in.Name != name {
		return identity.ClusterInput{}, identity.Errorf(identity.CodeInvalidParameter, "name %q in the body does not match %q in the path", in.Name, name)
	}
	k := in.Keys
	return identity.ClusterInput{Name: name, Issuer: in.Issuer, Keys: identity.KeySource{
		Kind: k.Kind, JWKS: k.JWKS, Path: k.Path, URL: k.URL, BearerToken: k.BearerToken, CACert: k.CACert, PEM: k.PEM, LiveCheck: k.LiveCheck,
	}}, nil
}

func (s *Server) registerCluster(r *request) (any, error) {
	in, err := s.clusterInput(r, "")
	if err != nil {
		return nil, err
	}
	c, err := s.svc.RegisterCluster(r.Context(), in)
	if err != nil {
		return nil, err
	}
	return api.ClusterResponse{Cluster: s.cluster(c)}, nil
}

func (s *Server) updateCluster(r *request) (any, error) {
	in, err := s.clusterInput(r, r.PathValue("clusterName"))
	if err != nil {
		return nil, err
	}
	c, err := s.svc.UpdateCluster(r.Context(), in)
	if err != nil {
		return nil, err
	}
	return api.ClusterResponse{Cluster: s.cluster(c)}, nil
}

func (s *Server) describeCluster(r *request) (any, error) {
	c, err := s.svc.GetCluster(r.Context(), r.PathValue("clusterName"))
	if err != nil {
		return nil, err
	}
	return api.ClusterResponse{Cluster: s.cluster(c)}, nil
}

func (s *Server) deleteCluster(r *request) (any, error) {
	c, err := s.svc.GetCluster(r.Context(), r.PathValue("clusterName"))
	if err != nil {
		return nil, err
	}
	if err := s.svc.DeleteCluster(r.Context(), c.Name); err != nil {
		return nil, err
	}
	return api.ClusterResponse{Cluster: s.cluster(c)}, nil
}

func (s *Server) listClusters(r *request) (any, error) {
	cs, err := s.svc.ListClusters(r.Context())
	if err != nil {
		return nil, err
	}
	out := api.ListClustersResponse{Clusters: make([]api.Cluster, 0, len(cs))}
	for i := range cs {
		out.Clusters = append(out.Clusters, s.cluster(&cs[i]))
	}
	return out, nil
}

// --- admin: audit ---

func (s *Server) listAudit(r *request) (any, error) {
	max, err := intParam(r, "maxResults")
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	var before int64
	if tok := q.Get("nextToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			before, err = strconv.ParseInt(string(raw), 10, 64)
		}
		if err != nil || before <= 0 {
			return nil, identity.Errorf(identity.CodeInvalidParameter, "nextToken is not a token this API returned")
		}
	}
	evs, next, err := s.svc.ListAudit(r.Context(), q.Get("cluster"), before, max)
	if err != nil {
		return nil, err
	}
	out := api.ListAuditResponse{Events: make([]api.AuditEvent, 0, len(evs))}
	for _, e := range evs {
		out.Events = append(out.Events, api.AuditEvent{
			ID: e.ID, Time: api.Epoch(e.Time), Cluster: e.Cluster, Namespace: e.Namespace, ServiceAccount: e.ServiceAccount,
			PodName: e.PodName, PodUID: e.PodUID, NodeName: e.NodeName, AssociationID: e.AssociationID, RoleArn: e.RoleARN,
			Outcome: e.Outcome, ErrorType: e.ErrorType, Message: e.Message, STSRequestID: e.STSRequestID,
		})
	}
	if next > 0 {
		tok := base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(next, 10)))
		out.NextToken = &tok
	}
	return out, nil
}
