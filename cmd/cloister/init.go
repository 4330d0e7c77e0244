package main

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/cloister-dev/cloister/enclave"
)

// newApp holds the files 'cloister init' writes (NAME.tmpl becomes NAME;
// gitignore.tmpl becomes .gitignore).
//
//go:embed template
var newApp embed.FS

// develRequire is the version a development build requires, replaced
// with its checkout.
const develRequire = "v0.0.0-00010101000000-000000000000"

// initData fills the templates.
type initData struct {
	Name, Module, Go, Version, Replace string
}

func initCommand() *cobra.Command {
	var module string
	var tidy bool
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "write a new application: a Go service, a trusted image, app.yaml and a test",
		Long: `Writes a new application into DIR (made if missing; it must be empty): a Go
module that requires Cloister, with

  app.yaml        the application description: nodes, the image, the services,
                  the addresses (one secured and open to outside clients), a client
  main.go         the program: registers the Go service with application.Main
  front.go        a regular service written in Go (front.hello)
  vault/main.go   a trusted image with protected storage (vault.count)
  app_test.go     a test that starts the application and calls both services,
                  the trusted one as an outside client would

then runs go mod tidy in it. It builds, passes go test and runs with
'cloister run app.yaml' at once. A development build of cloister (one built
from a checkout rather than installed at a published version) points the new
module at that checkout with a replace directive, and says so.

  cloister init hello && cd hello
  go test ./...
  cloister run app.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: action(func(ctx context.Context, env *cliEnv, args []string) error {
			return initApp(ctx, env, args[0], module, tidy)
		}),
	}
	cmd.Flags().StringVar(&module, "module", "", "the new module's `path` (default: DIR's base name)")
	cmd.Flags().BoolVar(&tidy, "tidy", true, "run go mod tidy in the new module (it downloads what the module needs)")
	return cmd
}

// appName is a description name: letters, digits, '-' and '_'.
var appName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

func initApp(ctx context.Context, env *cliEnv, dir, module string, tidy bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	name := filepath.Base(abs)
	if !appName.MatchString(name) {
		return usagef("init: %q cannot name an application (letters, digits, '-' and '_', starting with a letter): choose another directory name", name)
	}
	if module == "" {
		module = name
	}
	if entries, err := os.ReadDir(abs); err == nil && len(entries) > 0 {
		return fmt.Errorf("init: %s is not empty: init writes a new application into an empty or new directory", abs)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("init: %w", err)
	}
	tk := enclave.ThisToolkit()
	data := initData{Name: name, Module: module, Go: enclave.GoLanguageVersion(ctx, ""), Version: tk.Version, Replace: tk.Checkout}
	if tk.Development() {
		data.Version = develRequire
	} else if tk.Version == "" || tk.Version == "(devel)" {
		return fmt.Errorf("init: %w", enclave.ErrNoToolkit)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	err = fs.WalkDir(newApp, "template", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(p, "template/"), ".tmpl")
		if rel == "gitignore" {
			rel = ".gitignore"
		}
		text, err := newApp.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(rel).Parse(string(text))
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, data); err != nil {
			return err
		}
		dst := filepath.Join(abs, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, out.Bytes(), 0o644)
	})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	fmt.Fprintf(env.stdout, "wrote the application %s in %s (module %s)\n", name, abs, module)
	if data.Replace != "" {
		fmt.Fprintf(env.stdout, "this cloister is a development build: go.mod replaces github.com/cloister-dev/cloister with the checkout %s\n", data.Replace)
	}
	if tidy {
		gt := exec.CommandContext(ctx, "go", "mod", "tidy")
		gt.Dir, gt.Stdout, gt.Stderr = abs, env.stderr, env.stderr
		if err := gt.Run(); err != nil {
			return fmt.Errorf("init: go mod tidy in %s: %w", abs, err)
		}
	}
	fmt.Fprintf(env.stdout, "next:\n  cd %s\n  go test ./...\n  cloister run app.yaml\n", dir)
	return nil
}
