package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/application"
	"github.com/cloister-dev/cloister/manifest"
	"github.com/cloister-dev/cloister/provision"
)

// replicaStatusTimeout bounds each replica's answer to a status request.
const replicaStatusTimeout = 5 * time.Second

func coordinatorReplicasCommand() *cobra.Command {
	var cf clientFlags
	var n int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "replicas",
		Short: "print each coordinator replica's state (live, admitting, needs-recovery), incarnation, manifest and refused rollbacks",
		Long: `Asks every coordinator replica slot for its status (each slot at its own
address) and prints a table: state (live, admitting, needs-recovery) and
why, incarnation, the manifest it holds, the rollbacks it refused, and the
versions it read from its own sealed state. The answers are not attested.
--replicas N asks slots 0 to N-1; by default every possible slot is asked
and the table ends at the largest replica count any answer reports.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("replicas takes no arguments, got %q", args)}
			}
			if n < 0 || n > manifest.MaxReplicas {
				return &usageError{err: fmt.Errorf("--replicas %d: want 1 to %d (0: as many as answer)", n, manifest.MaxReplicas)}
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			statuses := application.ReplicaStatuses(ctx, b, n, replicaStatusTimeout)
			if asJSON {
				return printJSON(env.stdout, replicasJSON(statuses))
			}
			printReplicas(env.stdout, statuses)
			for _, s := range statuses {
				if s.Status != nil {
					return nil
				}
			}
			return errors.New("no coordinator replica answered")
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.IntVar(&n, "replicas", 0, "ask slots 0 to `N`-1 (default: as many as answer)")
	fs.BoolVar(&asJSON, "json", false, "print the statuses as JSON")
	return cmd
}

// replicaJSON is one slot in 'coordinator replicas --json'.
type replicaJSON struct {
	Slot   int                      `json:"slot"`
	Status *provision.ReplicaStatus `json:"status,omitempty"`
	Error  string                   `json:"error,omitempty"`
}

func replicasJSON(statuses []application.SlotStatus) []replicaJSON {
	out := make([]replicaJSON, len(statuses))
	for i, s := range statuses {
		out[i] = replicaJSON{Slot: s.Slot, Status: s.Status}
		if s.Err != nil {
			out[i].Error = s.Err.Error()
		}
	}
	return out
}

// printReplicas prints the statuses as a table, one slot a line.
func printReplicas(w io.Writer, statuses []application.SlotStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tSTATE\tINCARNATION\tMANIFEST\tROLLBACKS\tLOCAL STATE\tREASON")
	for _, s := range statuses {
		if s.Status == nil {
			fmt.Fprintf(tw, "%d\tno answer\t-\t-\t-\t-\t%v\n", s.Slot, s.Err)
			continue
		}
		st := s.Status
		m := st.ManifestHash
		if len(m) > 16 {
			m = m[:16]
		}
		if m == "" {
			m = "none"
		}
		var local []string
		for _, r := range st.Local {
			local = append(local, fmt.Sprintf("%s@%d", r.Subject, r.Counter))
		}
		if len(local) == 0 {
			local = []string{"-"}
		}
		reason := st.Reason
		if reason == "" {
			reason = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%s\n", s.Slot, st.State, st.Incarnation, m, st.Rollbacks, strings.Join(local, " "), reason)
	}
	tw.Flush()
}

func coordinatorRecoverCommand() *cobra.Command {
	var cf clientFlags
	var keyFile, manifestFile string
	var n int
	var yes bool
	cmd := &cobra.Command{
		Use:   "recover --key OWNER.pem",
		Short: "end a lost quorum of coordinator replicas with a recovery statement signed by the manifest owner",
		Long: `When a majority of the coordinator's replicas restarted at once, the latest
versions they remembered are gone, and the replicas refuse to serve until
the manifest owner says which state to continue from. recover asks every
replica for its status, refuses unless the replicas that need recovery
hold the same manifest (--manifest: that one), and builds the statement:
every such replica's recovery nonce and, per subject, the highest version
any replica read from its own sealed state. It shows the statement and
asks for confirmation (--yes: no question), signs it with the owner key
(--key: PEM, as 'cloister manifest sign --key') and hands it to each
replica that needs recovery, printing each answer.

What it protects: the host cannot choose the state the replicas continue
from; only the owner can. What it cannot: the versions are those the
replicas read from disk, which a host may have rolled back before the
restart; an owner who signs them accepts them.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("recover takes no arguments, got %q", args)}
			}
			if keyFile == "" {
				return &usageError{err: errors.New("--key is required (the manifest owner's private key)")}
			}
			owner, err := loadSigningKey("--key", keyFile)
			if err != nil {
				return err
			}
			var hash []byte
			if manifestFile != "" {
				m, err := parseManifestFile(env, manifestFile)
				if err != nil {
					return err
				}
				h := m.Hash()
				hash = h[:]
			}
			b, closeAll, err := cf.connect(ctx, env)
			if err != nil {
				return err
			}
			defer closeAll()
			answers, err := application.Recover(ctx, b, owner, n, hash, func(st *provision.RecoveryStatement, statuses []application.SlotStatus) error {
				printReplicas(env.stdout, statuses)
				fmt.Fprintf(env.stdout, "\nrecovery statement for manifest %x, %d replica(s) (slots %v); continue from:\n", st.ManifestHash, len(st.Nonces), application.NeedsRecovery(statuses))
				if len(st.Registers) == 0 {
					fmt.Fprintln(env.stdout, "  (no versions: every subject starts afresh)")
				}
				for _, r := range st.Registers {
					fmt.Fprintf(env.stdout, "  %-40s version %d  digest %x\n", r.Subject, r.Counter, r.Digest)
				}
				if yes {
					return nil
				}
				return confirm(env, "sign and send it with the owner key "+keyFile)
			})
			if err != nil {
				if errors.Is(err, application.ErrNoRecovery) && answers != nil {
					printReplicas(env.stdout, answers)
				}
				if errors.Is(err, application.ErrNoRecovery) {
					return &rejectedError{err: err}
				}
				return err
			}
			fmt.Fprintln(env.stdout, "\nanswers:")
			printReplicas(env.stdout, answers)
			if err := application.RecoveryErrors(answers); err != nil {
				return &rejectedError{err: err}
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	cf.register(fs)
	fs.StringVar(&keyFile, "key", "", "the manifest owner's private key, a PEM `file` (required)")
	aliasFlags(fs, map[string]string{"owner-key": "key"})
	fs.StringVar(&manifestFile, "manifest", "", "refuse unless the replicas hold this manifest `file`")
	fs.IntVar(&n, "replicas", 0, "ask slots 0 to `N`-1 (default: as many as answer)")
	fs.BoolVar(&yes, "yes", false, "sign and send without asking")
	return cmd
}

// errDeclined is a confirmation answered with no.
var errDeclined = errors.New("not confirmed: nothing was signed or sent")

// confirm asks a yes/no question on stdout and reads the answer from stdin.
func confirm(env *cliEnv, question string) error {
	fmt.Fprintf(env.stdout, "%s? [y/N] ", question)
	line, err := bufio.NewReader(env.stdin).ReadString('\n')
	if err != nil && line == "" {
		return &rejectedError{err: fmt.Errorf("%w (no answer on stdin; --yes does not ask)", errDeclined)}
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &rejectedError{err: errDeclined}
}
