package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/cloister-dev/cloister/bus"
	"github.com/cloister-dev/cloister/enclave"
	"github.com/cloister-dev/cloister/node"
)

func enclaveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enclave",
		Short: "build, measure and prepare enclave images",
	}
	return group(cmd, enclaveBuildCommand(), enclaveMeasureCommand(), enclaveGramineManifestCommand())
}

func enclaveBuildCommand() *cobra.Command {
	var (
		out, signer, dir string
		productID, svn   uint
	)
	cmd := &cobra.Command{
		Use: "build PKG",
		Example: `  cloister enclave build ./enclave -o service.img
  cloister enclave build -C ../cloister ./examples/counter/enclave -o counter.img --svn 2`,
		Short: "build a trusted main package into a reproducible enclave image and print its measurement",
		Long: `PKG is a main package that uses package trusted (e.g. ./examples/counter/enclave).
The image is built with go build -trimpath -buildvcs=false -ldflags=-buildid= and
CGO_ENABLED=0: static and reproducible, so building the same source with the same
Go toolchain twice gives the same SHA-256. That hash is the image's measurement
(the simulated MRENCLAVE); it is printed and written, with the signer, product ID,
SVN, Go version and package, to IMAGE.meta.json beside the image.

PKG is checked first (go list): a package that is not main, does not link
the trusted runtime (package trusted) or links host-side packages (bus,
cluster, node, enclave, NATS, net/http) is refused.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("enclave build takes one PKG, got %d arguments", len(args))}
			}
			if out == "" {
				return &usageError{err: errors.New("enclave build: -o IMAGE is required")}
			}
			if productID > 0xffff || svn > 0xffff {
				return &usageError{err: errors.New("enclave build: --product-id and --svn are 16-bit numbers")}
			}
			if err := checkTrustedImage(ctx, dir, args[0]); err != nil {
				return err
			}
			img, err := enclave.Build(ctx, args[0], out, enclave.BuildOptions{Dir: dir, Signer: signer,
				ProductID: uint16(productID), SVN: uint16(svn), Stderr: env.stderr})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.stdout, "%s  %s\n", img.Measurement, img.Path)
			fmt.Fprintf(env.stderr, "metadata: %s%s (signer %s, product %d, svn %d, %s)\n",
				img.Path, enclave.MetadataSuffix, img.Meta.SignerName, img.Meta.ProductID, img.Meta.SVN, img.Meta.GoVersion)
			if f, err := enclave.MeasureFootprint(ctx, dir, args[0]); err != nil {
				fmt.Fprintf(env.stderr, "footprint: not measured: %v\n", err)
			} else {
				fmt.Fprintf(env.stderr, "footprint: %s\n", f.Figures())
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVarP(&out, "output", "o", "", "output image `path` (required)")
	fs.StringVar(&signer, "signer", enclave.DefaultSigner, "signer `name` (its hash is the simulated MRSIGNER)")
	fs.UintVar(&productID, "product-id", 0, "ISV product `ID` recorded in the metadata")
	fs.UintVar(&svn, "svn", 0, "security version `number` recorded in the metadata")
	fs.StringVarP(&dir, "dir", "C", "", "run go build in `dir` (the module of PKG)")
	return cmd
}

func enclaveMeasureCommand() *cobra.Command {
	var (
		write          bool
		signer         string
		productID, svn uint
	)
	cmd := &cobra.Command{
		Use:   "measure IMAGE",
		Short: "print an image's measurement (SHA-256) and check it against its metadata",
		Long: `Prints the SHA-256 of IMAGE. When IMAGE.meta.json exists, the measurement is
checked against it: a mismatch (the image changed since it was built) exits
with status 3. --write (re)writes the metadata for an image built otherwise.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("enclave measure takes one IMAGE, got %d arguments", len(args))}
			}
			if productID > 0xffff || svn > 0xffff {
				return &usageError{err: errors.New("enclave measure: --product-id and --svn are 16-bit numbers")}
			}
			path := args[0]
			if write {
				if _, err := enclave.WriteMetadata(path, enclave.MetadataOptions{Signer: signer, ProductID: uint16(productID), SVN: uint16(svn)}); err != nil {
					return err
				}
			}
			m, err := enclave.Measure(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.stdout, "%s  %s\n", m, path)
			if _, err := enclave.Load(path); err != nil {
				switch {
				case errors.Is(err, enclave.ErrNoMetadata):
					fmt.Fprintf(env.stderr, "no metadata beside the image (use --write to create it)\n")
					return nil
				case errors.Is(err, enclave.ErrImageChanged):
					return &rejectedError{err: err}
				default:
					return err
				}
			}
			fmt.Fprintf(env.stderr, "matches %s%s\n", path, enclave.MetadataSuffix)
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.BoolVar(&write, "write", false, "write IMAGE.meta.json for this image")
	fs.StringVar(&signer, "signer", enclave.DefaultSigner, "signer `name` for --write")
	fs.UintVar(&productID, "product-id", 0, "ISV product `ID` for --write")
	fs.UintVar(&svn, "svn", 0, "security version `number` for --write")
	return cmd
}

func enclaveGramineManifestCommand() *cobra.Command {
	var (
		out, size, libos, logLevel, memLimit string
		threads                              int
		debug                                bool
		passEnv, trustedFiles                []string
	)
	cmd := &cobra.Command{
		Use:   "gramine-manifest IMAGE",
		Short: "generate the Gramine manifest that runs an image in an SGX enclave",
		Long: `Writes a Gramine manifest (TOML) for IMAGE on stdout or to -o FILE
(name it NAME.manifest): Gramine's LibOS as the loader's entrypoint, the image
as the LibOS entrypoint and a trusted file, sgx.enclave_size, sgx.max_threads,
sgx.remote_attestation = "dcap" (the image reads its quote and seal keys from
/dev/attestation), sgx.debug = false unless --debug, and an environment
allow-list (--pass-env). Then sign and run it as printed on stderr.`,
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) != 1 {
				return &usageError{err: fmt.Errorf("enclave gramine-manifest takes one IMAGE, got %d arguments", len(args))}
			}
			img, err := enclave.Load(args[0])
			if err != nil {
				return err
			}
			opts := enclave.GramineOptions{EnclaveSize: size, Threads: threads, LibOS: libos, Debug: debug,
				PassEnv: splitEnvList(passEnv), TrustedFiles: trustedFiles, LogLevel: logLevel}
			if memLimit != "" {
				if opts.MemoryLimit, err = enclave.ParseSize(memLimit); err != nil {
					return &usageError{err: fmt.Errorf("--memory-limit: %w", err)}
				}
			}
			text, err := enclave.GramineManifest(img, opts)
			if err != nil {
				return err
			}
			if out == "" {
				_, err = env.stdout.Write(text)
				return err
			}
			if err := os.WriteFile(out, text, 0o644); err != nil {
				return fmt.Errorf("-o/--output: %w", err)
			}
			sign, runCmd, err := enclave.GramineCommands(out, "")
			if err != nil {
				fmt.Fprintf(env.stderr, "wrote %s (%v)\n", out, err)
				return nil
			}
			fmt.Fprintf(env.stderr, "wrote %s; in %s run:\n  %s\n  %s\n", out, filepath.Dir(out), strings.Join(sign, " "), strings.Join(runCmd, " "))
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVarP(&out, "output", "o", "", "write the manifest to `file` (NAME.manifest) instead of stdout")
	fs.IntVar(&threads, "threads", enclave.DefaultGramineThreads, "sgx.max_threads: TCS `count` (handler workers plus the Go runtime's threads)")
	fs.StringVar(&size, "enclave-size", enclave.DefaultGramineEnclaveSize, "sgx.enclave_size, a power of two (`size` with K, M or G)")
	fs.StringVar(&libos, "libos", enclave.DefaultGramineLibOS, "`path` of Gramine's libsysdb.so")
	fs.StringVar(&logLevel, "log-level", "error", "loader.log_level")
	fs.StringVar(&memLimit, "memory-limit", "", "the image's Go memory limit (`size`, GOMEMLIMIT)")
	fs.BoolVar(&debug, "debug", false, "build a debug enclave (its memory is readable by the host)")
	fs.StringArrayVar(&passEnv, "pass-env", nil, "host environment `variable` to pass through (repeatable)")
	fs.StringArrayVar(&trustedFiles, "trusted-file", nil, "further `file` to measure in (repeatable)")
	return cmd
}

func splitEnvList(l []string) []string {
	var out []string
	for _, v := range l {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// ---- hosting enclaves on a node ----

// enclaveHosting holds the --enclave and --enclave-config flags of a verb
// that runs a node (cloister node).
type enclaveHosting struct {
	specs   []string
	configs []string
	// extra are enclaves the verb itself hosts (cloister coordinator),
	// deployed first; afterExtra, if set, runs once they serve and before
	// the others are deployed (the coordinator's manifest is set there, as
	// the others join it while they start).
	extra      []node.EnclaveConfig
	afterExtra func(ctx context.Context, b *bus.Bus) error
	// jsonLogs announces the enclaves as JSON log records, not text lines.
	jsonLogs bool
}

// register declares the flags on fs.
func (h *enclaveHosting) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&h.specs, "enclave", nil, "host an enclave image (repeatable): `spec` is name=N,image=PATH[,addresses=A,B,...][,backend=process|gramine][,transport=shm|pipe][,instances=N][,workers=N][,state=DIR][,memory=SIZE][,local=true][,service=S]")
	fs.StringArrayVar(&h.configs, "enclave-config", nil, "host the enclaves listed in a YAML or JSON `file` (repeatable)")
}

// configs returns every enclave the flags describe.
func (h *enclaveHosting) enclaves() ([]node.EnclaveConfig, error) {
	out := append([]node.EnclaveConfig(nil), h.extra...)
	for _, s := range h.specs {
		c, err := parseEnclaveSpec(s)
		if err != nil {
			return nil, &usageError{err: fmt.Errorf("--enclave %q: %w", s, err)}
		}
		out = append(out, c)
	}
	for _, f := range h.configs {
		cs, err := loadEnclaveConfigs(f)
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	return out, nil
}

// host deploys every configured enclave on a node made with opts (its
// bus, logger, operations endpoint and tracing) and returns the function
// that stops them (the node then closes its bus). With no enclave
// configured, no endpoint and no tracing it does nothing.
func (h *enclaveHosting) host(ctx context.Context, env *cliEnv, opts node.Options) (stop func(context.Context) error, err error) {
	cs, err := h.enclaves()
	if err != nil || (len(cs) == 0 && opts.Ops.Listen == "" && opts.Tracing.Endpoint == "") {
		return func(context.Context) error { return nil }, err
	}
	if len(cs) > 0 && opts.Simulation == nil {
		// Simulated enclaves sign their evidence and seal their state
		// with this machine's simulation root.
		if opts.Simulation, err = simulationRoot(); err != nil {
			return nil, err
		}
	}
	b, logger := opts.Bus, opts.Logger
	n, err := node.New(opts)
	if err != nil {
		return nil, err
	}
	if addr := n.OpsAddr(); addr != "" {
		url := "http://" + addr + node.PathMetrics
		announce(env.stderr, logger, h.jsonLogs, fmt.Sprintf("metrics: %s (health %s, %s)", url, node.PathHealthz, node.PathReadyz),
			"cloister: operations endpoint", "metrics", url, "healthz", "http://"+addr+node.PathHealthz, "readyz", "http://"+addr+node.PathReadyz)
	}
	stop = func(ctx context.Context) error { return n.Shutdown(ctx) }
	for i, c := range cs {
		if i == len(h.extra) && h.afterExtra != nil {
			err = h.afterExtra(ctx, b)
		}
		if err == nil {
			_, err = n.DeployEnclave(ctx, c)
		}
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = stop(sctx)
			return nil, err
		}
	}
	if len(cs) == len(h.extra) && h.afterExtra != nil {
		if err := h.afterExtra(ctx, b); err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = stop(sctx)
			return nil, err
		}
	}
	for _, e := range n.Enclaves() {
		announce(env.stderr, logger, h.jsonLogs, fmt.Sprintf("enclave %s/%d: pid %d, serving %s", e.Name, e.Instance, e.PID, strings.Join(e.Serving, " ")),
			"cloister: enclave serving", "enclave", e.Name, "instance", e.Instance, "pid", e.PID, "serving", e.Serving)
	}
	return stop, nil
}

// parseEnclaveSpec parses a --enclave value: comma-separated key=value
// pairs; a part without '=' continues the addresses list.
func parseEnclaveSpec(s string) (node.EnclaveConfig, error) {
	var c node.EnclaveConfig
	last := ""
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			if last != "addresses" {
				return c, fmt.Errorf("%q is not key=value", part)
			}
			c.Addresses = append(c.Addresses, part)
			continue
		}
		last = k
		var err error
		switch k {
		case "name":
			c.Name = v
		case "image":
			c.Image = v
		case "backend":
			c.Backend = v
		case "transport":
			c.Transport = v
		case "addresses", "address":
			last = "addresses"
			c.Addresses = append(c.Addresses, v)
		case "instances":
			c.Instances, err = strconv.Atoi(v)
		case "workers":
			c.Workers, err = strconv.Atoi(v)
		case "state", "state_dir":
			c.StateDir = v
		case "memory", "memory_limit":
			c.MemoryLimit, err = enclave.ParseSize(v)
		case "local":
			c.Local, err = strconv.ParseBool(v)
		case "service":
			c.Service = v
		case "restart_backoff":
			c.RestartBackoff, err = time.ParseDuration(v)
		default:
			return c, fmt.Errorf("unknown key %q (want name, image, backend, transport, addresses, instances, workers, state, memory, local, service, restart_backoff)", k)
		}
		if err != nil {
			return c, fmt.Errorf("%s: %w", k, err)
		}
	}
	if c.Name == "" || c.Image == "" {
		return c, errors.New("name= and image= are required")
	}
	return c, nil
}

// loadEnclaveConfigs reads enclave entries from a YAML or JSON file: a
// list of entries, or an object with an "enclaves" list.
func loadEnclaveConfigs(path string) ([]node.EnclaveConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("enclave config: %w", err)
	}
	var wrapped struct {
		Enclaves []node.EnclaveConfig `yaml:"enclaves"`
	}
	var list []node.EnclaveConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 0 && (trimmed[0] == '[' || trimmed[0] == '-') {
		err = dec.Decode(&list)
	} else {
		err = dec.Decode(&wrapped)
		list = wrapped.Enclaves
	}
	if err != nil {
		return nil, fmt.Errorf("enclave config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for i := range list {
		c := &list[i]
		if c.Name == "" || c.Image == "" {
			return nil, fmt.Errorf("enclave config %s: entry %d needs name and image", path, i+1)
		}
		// Relative paths are relative to the configuration file.
		if !filepath.IsAbs(c.Image) {
			c.Image = filepath.Join(dir, c.Image)
		}
		if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
			c.StateDir = filepath.Join(dir, c.StateDir)
		}
	}
	return list, nil
}
