package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at link time with -ldflags "-X main.version=v1.2.3"; when
// empty, the module version from the build info is used.
var version = ""

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version of cloister and of its Go toolchain",
		run: func(ctx context.Context, env *cliEnv, args []string) error {
			if len(args) > 0 {
				return &usageError{err: fmt.Errorf("version takes no arguments, got %q", args)}
			}
			fmt.Fprintf(env.stdout, "cloister %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}
