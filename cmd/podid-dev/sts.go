package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/sts/ststest"
)

type stsOptions struct {
	listen  string
	account string
}

func newSTSCmd() *cobra.Command {
	o := &stsOptions{}
	cmd := &cobra.Command{
		Use:   "sts",
		Short: "Run a fake AWS STS and print the environment podid server needs to call it",
		Long: `Run a fake AWS STS (AssumeRole, GetCallerIdentity) until interrupted.

It prints shell lines to stdout that point podid server at it: the endpoint
(PODID_STS_ENDPOINT) and the fake STS's own access key, which podid server
picks up through the default AWS credential chain. The key is a random
throwaway that only this process accepts; it is printed on purpose.

  podid-dev sts > sts.env &
  . ./sts.env && podid server`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSTS(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port)")
	f.StringVar(&o.account, "account", ststest.DefaultAccount, "12-digit AWS account id of the fake STS's IAM user")
	return cmd
}

func runSTS(ctx context.Context, o *stsOptions, out, errOut io.Writer) error {
	if !isAccountID(o.account) {
		return fmt.Errorf("invalid --account %q: an AWS account id is exactly 12 digits", o.account)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", o.listen, err)
	}
	srv := ststest.Start(ststest.WithAccount(o.account), ststest.WithListener(ln))
	defer srv.Close()

	creds, err := srv.Credentials().Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("reading the fake STS's key: %w", err)
	}
	// Only sourceable lines go to stdout, so it can be redirected into a
	// file and sourced. A leftover session token from a real AWS login
	// would be sent with the fake key and fail the signature check, hence
	// the unset.
	_, err = fmt.Fprintf(out, "export PODID_STS_ENDPOINT=%s\nexport AWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY=%s\nunset AWS_SESSION_TOKEN\n",
		shellQuote(srv.URL), shellQuote(creds.AccessKeyID), shellQuote(creds.SecretAccessKey))
	if err != nil {
		return err
	}
	fmt.Fprintf(errOut, "podid-dev: fake STS for account %s listening on %s; stop with Ctrl-C\n", o.account, srv.URL)
	<-ctx.Done()
	fmt.Fprintln(errOut, "podid-dev: fake STS stopped")
	return nil
}

func isAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
