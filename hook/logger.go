package hook

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewLogger returns the logger of agentcg-hook and agentcg-runc for
// --log-format: "text" (slog key=value, the default) or "json". JSON levels
// are lower case ("error"), as runc and containerd write them: the runc
// shim takes the last "error" line of runc's --log file as the reason a
// container failed, and the wrapper's lines land in that file.
func NewLogger(format string, w io.Writer, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.LevelKey {
				if l, ok := a.Value.Any().(slog.Level); ok {
					return slog.String(slog.LevelKey, strings.ToLower(l.String()))
				}
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: allowed values are text, json", format)
}
