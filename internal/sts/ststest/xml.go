package ststest

import (
	"encoding/xml"
	"errors"
	"net/http"
)

// The shapes below follow the AssumeRole and GetCallerIdentity outputs of
// the STS model, wrapped the way the awsQuery protocol wraps them.

type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

type credentialsXML struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type assumedRoleUserXML struct {
	Arn           string `xml:"Arn"`
	AssumedRoleID string `xml:"AssumedRoleId"`
}

type assumeRoleResult struct {
	Credentials      credentialsXML     `xml:"Credentials"`
	AssumedRoleUser  assumedRoleUserXML `xml:"AssumedRoleUser"`
	PackedPolicySize int                `xml:"PackedPolicySize"`
}

type assumeRoleResponse struct {
	XMLName xml.Name         `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	Result  assumeRoleResult `xml:"AssumeRoleResult"`
	Meta    responseMetadata `xml:"ResponseMetadata"`
}

type getCallerIdentityResult struct {
	Arn     string `xml:"Arn"`
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
}

type getCallerIdentityResponse struct {
	XMLName xml.Name                `xml:"https://sts.amazonaws.com/doc/2011-06-15/ GetCallerIdentityResponse"`
	Result  getCallerIdentityResult `xml:"GetCallerIdentityResult"`
	Meta    responseMetadata        `xml:"ResponseMetadata"`
}

type errorXML struct {
	Type    string `xml:"Type"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type errorResponse struct {
	XMLName   xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Error     errorXML `xml:"Error"`
	RequestID string   `xml:"RequestId"`
}

func marshal(v any) ([]byte, error) {
	b, err := xml.Marshal(v)
	if err != nil {
		return nil, &stsError{status: http.StatusInternalServerError, code: "InternalFailure", message: "cannot encode response"}
	}
	return append([]byte(xml.Header), b...), nil
}

// writeError answers err in STS's error shape. Errors that are not STS
// errors are the fake's own bugs and answer InternalFailure.
func writeError(w http.ResponseWriter, err error, reqID string) {
	var se *stsError
	if !errors.As(err, &se) {
		se = &stsError{status: http.StatusInternalServerError, code: "InternalFailure", message: err.Error()}
	}
	typ := "Sender"
	if se.status >= 500 {
		typ = "Receiver"
	}
	b, _ := xml.Marshal(errorResponse{Error: errorXML{Type: typ, Code: se.code, Message: se.message}, RequestID: reqID})
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(se.status)
	_, _ = w.Write(append([]byte(xml.Header), b...))
}
