// Renders an Ollama Modelfile TEMPLATE as Ollama does, so tests can compare it with our Jinja template: Go's
// text/template with missingkey=zero and Ollama's one template function (`json`), messages collated as Ollama's
// template.Execute does (system messages joined into .System and kept in .Messages; consecutive same-role
// messages merged, tool results kept apart), and stand-ins for Ollama's api types with the same JSON field order
// (type, items, function; name, description, parameters; type, $defs, items, required, properties) and the same
// key order (tool arguments and properties keep the client's order, as Ollama's ordered maps do).
//
// Why our own: Ollama's module cannot be fetched offline; Debian's Go gives the real text/template and encoding/json.
//
// Usage: go run scripts/ollama_render.go < request.json, where request.json is
// {"template": "...", "system": "<Modelfile SYSTEM, optional>", "messages": [...], "tools": [...]}
// in OpenAI's shape (arguments as an object or a JSON string, as Ollama's OpenAI endpoint accepts them).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

// ordered is a JSON object that keeps its keys' order, as Ollama's orderedmap-backed types do.
type ordered[V any] struct {
	keys []string
	vals map[string]V
}

func (o *ordered[V]) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // '{'
		return err
	}
	o.vals = map[string]V{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string)
		var v V
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if _, seen := o.vals[key]; !seen {
			o.keys = append(o.keys, key)
		}
		o.vals[key] = v
	}
	_, err := dec.Token() // '}'
	return err
}

func (o ordered[V]) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(o.vals[k])
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(vb)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// Arguments: OpenAI clients may send a JSON string; Ollama's OpenAI endpoint decodes it into the object.
type Arguments struct{ ordered[any] }

func (a *Arguments) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		b = []byte(s)
	}
	return a.ordered.UnmarshalJSON(b)
}

func (a *Arguments) String() string {
	b, _ := json.Marshal(a.ordered)
	return string(b)
}

type PropertyType []string

func (p *PropertyType) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*p = []string{s}
		return nil
	}
	var many []string
	err := json.Unmarshal(b, &many)
	*p = many
	return err
}

func (p PropertyType) MarshalJSON() ([]byte, error) {
	if len(p) == 1 {
		return json.Marshal(p[0])
	}
	return json.Marshal([]string(p))
}

type Property struct {
	AnyOf       []Property          `json:"anyOf,omitempty"`
	Type        PropertyType        `json:"type,omitempty"`
	Items       any                 `json:"items,omitempty"`
	Description string              `json:"description,omitempty"`
	Enum        []any               `json:"enum,omitempty"`
	Properties  *ordered[Property] `json:"properties,omitempty"`
}

type Parameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties *ordered[Property] `json:"properties"`
}

type Function struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Parameters  Parameters `json:"parameters"`
}

func (f *Function) String() string {
	b, _ := json.Marshal(f)
	return string(b)
}

type Tool struct {
	Type     string   `json:"type"`
	Items    any      `json:"items,omitempty"`
	Function Function `json:"function"`
}

type CallFunction struct {
	Index     int       `json:"index,omitempty"`
	Name      string    `json:"name"`
	Arguments Arguments `json:"arguments"`
}

type ToolCall struct {
	ID       string       `json:"id,omitempty"`
	Function CallFunction `json:"function"`
}

type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type request struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []Message `json:"messages"`
	Tools    []Tool    `json:"tools"`
}

// collate as Ollama's template.Execute: system messages joined, consecutive same-role messages merged (not tools).
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var out []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			out = append(out, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), out
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "request:", err)
		os.Exit(2)
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(req.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "template:", err)
		os.Exit(3)
	}
	msgs := req.Messages
	if req.System != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]Message{{Role: "system", Content: req.System}}, msgs...) // the Modelfile's SYSTEM
	}
	system, collated := collate(msgs)
	values := map[string]any{"System": system, "Messages": collated, "Tools": req.Tools, "Response": ""}
	if err := tmpl.Execute(os.Stdout, values); err != nil {
		fmt.Fprintln(os.Stderr, "execute:", err)
		os.Exit(4)
	}
}
