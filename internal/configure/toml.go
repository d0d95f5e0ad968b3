package configure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// tomlOp is one edit of a TOML document: set the key at path to a value,
// or make sure the array at path contains an element.
type tomlOp struct {
	path    []string
	value   any  // string, bool, int64 or []any of those
	element bool // value is one element to add to the array at path
}

// tomlEdit applies ops to doc in place, as text: every other byte
// (comments, order, quoting, blank lines) is kept. A key that exists is
// rewritten on its own line; a missing key goes at the end of its table's
// section, or into a new [table] at the end of the file. The result is
// then decoded and compared with the original plus the ops, so an edit that
// changed anything else is an error, never a silent rewrite.
func tomlEdit(doc []byte, ops []tomlOp) ([]byte, error) {
	var before map[string]any
	if err := toml.Unmarshal(doc, &before); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if before == nil {
		before = map[string]any{}
	}
	out := doc
	for _, op := range ops {
		var err error
		if out, err = tomlApply(out, op); err != nil {
			return nil, fmt.Errorf("%s: %w; edit the file by hand", tomlPath(op.path), err)
		}
	}
	var after map[string]any
	if err := toml.Unmarshal(out, &after); err != nil {
		return nil, fmt.Errorf("the edited document does not parse (edit the file by hand): %w", err)
	}
	want := deepCopy(before)
	for _, op := range ops {
		mapApply(want, op)
	}
	if !reflect.DeepEqual(normalise(want), normalise(after)) {
		return nil, fmt.Errorf("editing in place would change more than asked (a key defined inline or by dotted keys elsewhere?); edit the file by hand")
	}
	return out, nil
}

// Lookup returns the value at path in a decoded TOML (or JSON) document,
// whose nested tables are map[string]any.
func Lookup(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, k := range path {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// satisfied says whether op already holds in m.
func satisfied(m map[string]any, op tomlOp) bool {
	v, ok := Lookup(m, op.path)
	if !ok {
		return false
	}
	if op.element {
		arr, ok := v.([]any)
		return ok && slices.ContainsFunc(arr, func(e any) bool { return reflect.DeepEqual(normalise(e), normalise(op.value)) })
	}
	return reflect.DeepEqual(normalise(v), normalise(op.value))
}

func mapApply(m map[string]any, op tomlOp) {
	cur := m
	for _, k := range op.path[:len(op.path)-1] {
		next, ok := cur[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[k] = next
		}
		cur = next
	}
	last := op.path[len(op.path)-1]
	if !op.element {
		cur[last] = op.value
		return
	}
	arr, _ := cur[last].([]any)
	if !slices.ContainsFunc(arr, func(e any) bool { return reflect.DeepEqual(normalise(e), normalise(op.value)) }) {
		arr = append(arr, op.value)
	}
	cur[last] = arr
}

// normalise maps integer kinds to int64 so that decoded and built values compare.
func normalise(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = normalise(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = normalise(e)
		}
		return out
	case int:
		return int64(t)
	}
	return v
}

func deepCopy(m map[string]any) map[string]any {
	return normalise(m).(map[string]any)
}

// tomlDoc is what tomlApply needs to know about a document: where each
// key-value sits and where each [table] section ends.
type tomlDoc struct {
	kvs    map[string]tomlKV   // full dotted path -> location
	tables map[string]tomlSect // [header] path -> section
}

type tomlKV struct {
	start, keyEnd, end int // the expression, and the end of its key
	value              any
	indent             string
}

type tomlSect struct {
	headerEnd int    // end of the header line's expression
	end       int    // end of the last expression in the section
	indent    string // indentation of its key-values
}

func scanTOML(doc []byte) (tomlDoc, error) {
	d := tomlDoc{kvs: map[string]tomlKV{}, tables: map[string]tomlSect{}}
	var p unstable.Parser
	p.Reset(doc)
	var table []string
	cur := ""
	var decoded map[string]any
	if err := toml.Unmarshal(doc, &decoded); err != nil {
		return d, err
	}
	d.tables[""] = tomlSect{}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(e.Key())
			cur = tomlPath(table)
			if e.Kind == unstable.ArrayTable {
				cur = "[[" + cur + "]]" // never matched: we do not edit arrays of tables
			}
			// Headers carry no range: the section starts at the header's line end.
			end := lineEnd(doc, lastKeyEnd(e))
			d.tables[cur] = tomlSect{headerEnd: end, end: end, indent: lineIndent(doc, lastKeyEnd(e)) + "  "}
		case unstable.KeyValue:
			full := append(slices.Clone(table), keyParts(e.Key())...)
			start := int(e.Raw.Offset)
			kv := tomlKV{start: start, keyEnd: lastKeyEnd(e), end: int(e.Raw.Offset + e.Raw.Length), indent: lineIndent(doc, start)}
			kv.value, _ = Lookup(decoded, full)
			d.kvs[tomlPath(full)] = kv
			// A new key goes after the line (and comment) of the section's last one.
			s := d.tables[cur]
			s.end, s.indent = lineEnd(doc, kv.end), kv.indent
			d.tables[cur] = s
		}
	}
	return d, p.Error()
}

func keyParts(it unstable.Iterator) []string {
	var out []string
	for it.Next() {
		out = append(out, string(it.Node().Data))
	}
	return out
}

func lastKeyEnd(e *unstable.Node) int {
	it := e.Key()
	end := 0
	for it.Next() {
		n := it.Node()
		end = int(n.Raw.Offset + n.Raw.Length)
	}
	return end
}

func lineEnd(doc []byte, off int) int {
	if i := bytes.IndexByte(doc[off:], '\n'); i >= 0 {
		return off + i
	}
	return len(doc)
}

func lineIndent(doc []byte, off int) string {
	start := bytes.LastIndexByte(doc[:off], '\n') + 1
	i := start
	for i < off && (doc[i] == ' ' || doc[i] == '\t') {
		i++
	}
	return string(doc[start:i])
}

func tomlApply(doc []byte, op tomlOp) ([]byte, error) {
	d, err := scanTOML(doc)
	if err != nil {
		return nil, err
	}
	key := tomlPath(op.path)
	value := op.value
	if kv, ok := d.kvs[key]; ok {
		if op.element {
			arr, ok := kv.value.([]any)
			if !ok {
				return nil, fmt.Errorf("is %T, not an array", kv.value)
			}
			value = append(slices.Clone(arr), op.value)
		}
		text, err := tomlValue(value)
		if err != nil {
			return nil, err
		}
		return splice(doc, kv.start, kv.end, string(doc[kv.start:kv.keyEnd])+" = "+text), nil
	}
	if op.element {
		value = []any{op.value}
	}
	text, err := tomlValue(value)
	if err != nil {
		return nil, err
	}
	tablePath, last := op.path[:len(op.path)-1], op.path[len(op.path)-1]
	if s, ok := d.tables[tomlPath(tablePath)]; ok && len(tablePath) > 0 {
		return splice(doc, s.end, s.end, "\n"+s.indent+tomlKey(last)+" = "+text), nil
	}
	if len(tablePath) == 0 {
		// A top-level key must come before the first table.
		return append([]byte(tomlKey(last)+" = "+text+"\n"), doc...), nil
	}
	out := bytes.TrimRight(doc, "\n")
	if len(out) > 0 {
		out = append(out, "\n\n"...)
	}
	out = append(out, "["+tomlPath(tablePath)+"]\n  "+tomlKey(last)+" = "+text+"\n"...)
	return out, nil
}

func splice(doc []byte, from, to int, text string) []byte {
	out := make([]byte, 0, len(doc)+len(text))
	out = append(out, doc[:from]...)
	out = append(out, text...)
	return append(out, doc[to:]...)
}

var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// tomlKey quotes a key part the way containerd writes them.
func tomlKey(k string) string {
	if bareKey.MatchString(k) {
		return k
	}
	if !strings.ContainsAny(k, "'\n") {
		return "'" + k + "'"
	}
	b, _ := json.Marshal(k)
	return string(b)
}

func tomlPath(path []string) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = tomlKey(p)
	}
	return strings.Join(parts, ".")
}

func tomlValue(v any) (string, error) {
	switch t := v.(type) {
	case string:
		if !strings.ContainsAny(t, "'\n\r") {
			return "'" + t + "'", nil
		}
		b, _ := json.Marshal(t) // a JSON string is a valid TOML basic string
		return string(b), nil
	case bool:
		return fmt.Sprint(t), nil
	case int64, int:
		return fmt.Sprint(t), nil
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			s, err := tomlValue(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return "[" + strings.Join(parts, ", ") + "]", nil
	}
	return "", fmt.Errorf("cannot write a %T value", v)
}
