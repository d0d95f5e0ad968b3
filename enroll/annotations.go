package enroll

import (
	"fmt"
	"unicode/utf8"

	"github.com/agentcg/agentcg/policy"
)

// EffectiveAnnotation finds the priority annotation that applies to the
// container named name, the way NRI's plugin.GetEffectiveAnnotation does:
// KEY/container.NAME first, then KEY/pod, then KEY. It returns the value
// and the key that matched. An empty name skips the container-scoped key.
func EffectiveAnnotation(ann map[string]string, key, name string) (value, matched string, ok bool) {
	keys := []string{key + "/pod", key}
	if name != "" {
		keys = append([]string{key + "/container." + name}, keys...)
	}
	for _, k := range keys {
		if v, ok := ann[k]; ok {
			return v, k, true
		}
	}
	return "", "", false
}

// maxLoggedValue bounds how much of an untrusted annotation value reaches
// logs and errors (an annotation may be 256 KiB).
const maxLoggedValue = 64

// ParseAnnotation parses the value of the annotation key; an invalid value
// is quoted truncated in the error, which names the allowed set.
func ParseAnnotation(key, value string) (policy.Priority, error) {
	p, err := policy.ParsePriority(value)
	if err == nil {
		return p, nil
	}
	return "", fmt.Errorf("annotation %s: invalid priority %s: allowed values are high, low", key, Truncate(value))
}

// Truncate quotes s, cut to a short prefix (on a rune boundary) with the
// full length noted when it is long.
func Truncate(s string) string {
	if len(s) <= maxLoggedValue {
		return fmt.Sprintf("%q", s)
	}
	cut := maxLoggedValue
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%q...(%d bytes)", s[:cut], len(s))
}
