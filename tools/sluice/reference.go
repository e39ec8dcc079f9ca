package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/sluice-shuffle/sluice/manager"
	"github.com/sluice-shuffle/sluice/manager/config"
)

// configReference renders the configuration reference of every command
// that takes settings (key, flag, environment variable, default, meaning)
// as Markdown, from the very flag sets the commands bind: the README
// carries it, and a test keeps the two equal.
func configReference() string {
	mcfg, wcfg, lcfg, dcfg, rcfg := manager.DefaultConfig(), defaultWorkerConfig(), defaultLocalConfig(), defaultDemoConfig(), defaultReplayConfig()
	lcfg.LogLevel = "info" // as runLocal sets it
	var b strings.Builder
	for _, c := range []struct {
		cmd, prefix string
		settings    any
	}{
		{"manager", managerEnvPrefix, &mcfg},
		{"worker", workerEnvPrefix, &wcfg},
		{"local", localEnvPrefix, &lcfg},
		{"demo", demoEnvPrefix, &dcfg},
		{"replay", replayEnvPrefix, &rcfg},
	} {
		fs := flag.NewFlagSet(c.cmd, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		config.Bind(fs, c.prefix, c.settings)
		fmt.Fprintf(&b, "#### `sluice %s`\n\nFile: `--config FILE` or `$%s_CONFIG`.\n\n", c.cmd, c.prefix)
		b.WriteString("| key / flag | environment | default | meaning |\n| --- | --- | --- | --- |\n")
		fs.VisitAll(func(f *flag.Flag) {
			// Bind's usage reads "meaning [`type`, $ENV]".
			meaning, tail, _ := strings.Cut(f.Usage, " [`")
			env := ""
			if _, e, ok := strings.Cut(tail, ", $"); ok {
				env = "`$" + strings.TrimSuffix(e, "]") + "`"
			}
			def := f.DefValue
			if def != "" {
				def = "`" + def + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.Name, env, def, strings.ReplaceAll(meaning, "|", `\|`))
		})
		b.WriteString("\n")
	}
	return b.String()
}
