package trace

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// ToolCall is one agent tool invocation, used to label phases in figures.
type ToolCall struct {
	Tool string  `json:"tool"`
	ID   string  `json:"id,omitempty"`
	T    float64 `json:"t_s"`               // start, seconds since the trace's first kept sample
	EndT float64 `json:"end_t_s,omitempty"` // end on the same clock; 0 when not recorded
}

type toolCallJSON struct {
	Timestamp    string `json:"timestamp"`
	Tool         string `json:"tool"`
	ID           string `json:"id"`
	EndTimestamp string `json:"end_timestamp"`
}

// LoadToolCalls reads tool_calls.json and places each call on the trace clock
// whose origin is startUnix (Unix seconds). Timestamps are ISO-8601 UTC.
func LoadToolCalls(path string, startUnix float64) ([]ToolCall, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw []toolCallJSON
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]ToolCall, 0, len(raw))
	for i, r := range raw {
		ts, err := time.Parse(time.RFC3339Nano, r.Timestamp)
		if err != nil {
			return nil, fmt.Errorf("%s: tool call %d: timestamp: %w", path, i, err)
		}
		c := ToolCall{Tool: r.Tool, ID: r.ID, T: unixSeconds(ts) - startUnix}
		if r.EndTimestamp != "" {
			te, err := time.Parse(time.RFC3339Nano, r.EndTimestamp)
			if err != nil {
				return nil, fmt.Errorf("%s: tool call %d: end_timestamp: %w", path, i, err)
			}
			c.EndT = unixSeconds(te) - startUnix
		}
		out = append(out, c)
	}
	return out, nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
