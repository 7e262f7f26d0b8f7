package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// NewRootCmd builds the podid command tree.
func NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "podid",
		Short:         "Self-hosted EKS Pod Identity for any Kubernetes cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServerCmd(), newAgentCmd(), newWebhookCmd(), newClusterCmd(),
		newAssociationCmd(), newAuditCmd(), newExplainCmd(), newApplyCmd(), newImportCmd())
	return root
}

// layered returns a RunE that fills unset flags from the environment and
// the config file named by *config before calling run.
func layered(config *string, run func(ctx context.Context) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		file, err := readConfigFile(*config, cmd.Flags())
		if err != nil {
			return err
		}
		if err := applyLayers(cmd.Flags(), file); err != nil {
			return err
		}
		return run(cmd.Context())
	}
}

// applyLayers fills every flag the user did not set on the command line
// from the environment (PODID_<FLAG>, dashes as underscores), then from the
// config file's key of the same name. Flags win over the environment, the
// environment over the file.
func applyLayers(fs *pflag.FlagSet, file map[string]any) error {
	var firstErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if firstErr != nil || f.Changed || f.Name == "config" {
			return
		}
		env := "PODID_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				firstErr = fmt.Errorf("environment %s: %w", env, err)
			}
			return
		}
		v, ok := file[f.Name]
		if !ok {
			return
		}
		var s string
		switch v := v.(type) {
		case string:
			s = v
		case bool, float64:
			s = fmt.Sprint(v)
		default:
			firstErr = fmt.Errorf("config file: %q must be a string, number or boolean", f.Name)
			return
		}
		if err := fs.Set(f.Name, s); err != nil {
			firstErr = fmt.Errorf("config file: %q: %w", f.Name, err)
		}
	})
	return firstErr
}

// readConfigFile reads a JSON config file whose keys are flag names.
func readConfigFile(path string, fs *pflag.FlagSet) (map[string]any, error) {
	if path == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("config file %s is not a JSON object: %w", path, err)
	}
	for k := range m {
		if fs.Lookup(k) == nil || k == "config" {
			return nil, fmt.Errorf("config file %s: unknown setting %q (settings are the command's flag names)", path, k)
		}
	}
	return m, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
