package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spool-run/spool"
)

// fileEndpoint is an endpoint as the config file writes it: the settings of spool.Endpoint, its
// times as Go durations ("5s") under names without a unit, where the API keeps RunPod's seconds
// and milliseconds (idleTimeout, executionTimeoutMs …). A nil field keeps the endpoint's default.
type fileEndpoint struct {
	Name               string            `yaml:"name"`
	WorkersMin         *int              `yaml:"workersMin"`
	WorkersMax         *int              `yaml:"workersMax"`
	IdleTimeout        *time.Duration    `yaml:"idleTimeout"`
	ScalerType         *spool.ScalerType `yaml:"scalerType"`
	ScalerValue        *int              `yaml:"scalerValue"`
	ExecutionTimeout   *time.Duration    `yaml:"executionTimeout"`
	TTL                *time.Duration    `yaml:"ttl"`
	GPUCount           *int              `yaml:"gpuCount"`
	MaxQueue           *int              `yaml:"maxQueue"`
	OutputOffloadBytes *int64            `yaml:"outputOffloadBytes"`
	WebhookSecret      *string           `yaml:"webhookSecret"`
	WebhookAttempts    *int              `yaml:"webhookAttempts"`
	WebhookBackoff     *string           `yaml:"webhookBackoff"`
	WebhookDelay       *time.Duration    `yaml:"webhookDelay"`
	WebhookMaxDelay    *time.Duration    `yaml:"webhookMaxDelay"`
	WebhookTimeout     *time.Duration    `yaml:"webhookTimeout"`
	Worker             *spool.WorkerSpec `yaml:"worker"`

	line int // where the endpoint starts in the file, for its errors
}

func (f *fileEndpoint) UnmarshalYAML(n *yaml.Node) error {
	type plain fileEndpoint // without this method, so that Decode does not recurse
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*f = fileEndpoint(p)
	f.line = n.Line
	return nil
}

// apiNames maps the file's names of an endpoint's times to the API's, which name their unit.
var apiNames = map[string]string{
	"executionTimeout": "executionTimeoutMs", "ttl": "ttlMs", "webhookDelay": "webhookDelayMs",
	"webhookMaxDelay": "webhookMaxDelayMs", "webhookTimeout": "webhookTimeoutMs",
}

// endpoint returns the spool.Endpoint the file describes, over the defaults.
func (f *fileEndpoint) endpoint() (spool.Endpoint, error) {
	ep := spool.NewEndpoint(f.Name)
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&ep.WorkersMin, f.WorkersMin)
	set(&ep.WorkersMax, f.WorkersMax)
	set(&ep.ScalerValue, f.ScalerValue)
	set(&ep.GPUCount, f.GPUCount)
	set(&ep.MaxQueue, f.MaxQueue)
	set(&ep.WebhookAttempts, f.WebhookAttempts)
	if f.ScalerType != nil {
		ep.ScalerType = *f.ScalerType
	}
	if f.OutputOffloadBytes != nil {
		ep.OutputOffloadBytes = *f.OutputOffloadBytes
	}
	if f.WebhookSecret != nil {
		ep.WebhookSecret = *f.WebhookSecret
	}
	if f.WebhookBackoff != nil {
		ep.WebhookBackoff = *f.WebhookBackoff
	}
	if f.IdleTimeout != nil {
		if *f.IdleTimeout%time.Second != 0 {
			return ep, fmt.Errorf("idleTimeout must be whole seconds, got %s", f.IdleTimeout)
		}
		ep.IdleTimeout = int(*f.IdleTimeout / time.Second)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		dst  *int64
	}{
		{"executionTimeout", f.ExecutionTimeout, &ep.ExecutionTimeoutMs}, {"ttl", f.TTL, &ep.TTLMs},
		{"webhookDelay", f.WebhookDelay, &ep.WebhookDelayMs}, {"webhookMaxDelay", f.WebhookMaxDelay, &ep.WebhookMaxDelayMs},
		{"webhookTimeout", f.WebhookTimeout, &ep.WebhookTimeoutMs},
	} {
		if d.v == nil {
			continue
		}
		if *d.v%time.Millisecond != 0 {
			return ep, fmt.Errorf("%s must be whole milliseconds, got %s", d.name, d.v)
		}
		*d.dst = d.v.Milliseconds()
	}
	ep.Worker = f.Worker
	if err := ep.Validate(); err != nil {
		return ep, errors.New(fileWords(spool.ErrorMessage(err)))
	}
	return ep, nil
}

// fileWords rewrites an endpoint validation message in the file's words: "executionTimeoutMs
// must be greater than 5000" is about the file's executionTimeout, in milliseconds.
func fileWords(msg string) string {
	for file, api := range apiNames {
		msg = strings.ReplaceAll(msg, api, file+" (in milliseconds)")
	}
	return msg
}

// renamed says what a setting the file does not know is called there, for settings people write
// because the API has them.
var renamed = map[string]string{
	"executionTimeoutMs": `"executionTimeout", a duration such as 10m`,
	"ttlMs":              `"ttl", a duration such as 24h`,
	"webhookDelayMs":     `"webhookDelay", a duration such as 10s`,
	"webhookMaxDelayMs":  `"webhookMaxDelay", a duration such as 1h`,
	"webhookTimeoutMs":   `"webhookTimeout", a duration such as 10s`,
}

// fileChecker checks a config file's YAML against the shape of fileConfig before it is decoded,
// so that a mistake is reported as the setting and line it is about, in the file's words, rather
// than as a Go type.
type fileChecker struct{ file string }

var (
	durationType = reflect.TypeFor[time.Duration]()
)

func (fc fileChecker) errorf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", fc.file, n.Line, fmt.Sprintf(format, args...))
}

// check checks node n, which sets setting where ("" at the top), against type t.
func (fc fileChecker) check(n *yaml.Node, t reflect.Type, where string) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return fc.check(n.Content[0], t, where)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an empty setting keeps its default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return fc.checkDuration(n, where)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fc.errorf(n, "%s must be a mapping of settings (name: value), not %s", quoteSetting(where), describeNode(n))
		}
		return fc.checkMapping(n, t, where)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fc.errorf(n, "%s must be a list ([a, b] or one \"- item\" per line), not %s", quoteSetting(where), describeNode(n))
		}
		for i, item := range n.Content {
			if err := fc.check(item, t.Elem(), fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fc.errorf(n, "%s must be a mapping (NAME: value), not %s", quoteSetting(where), describeNode(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := fc.check(n.Content[i+1], t.Elem(), where+"."+n.Content[i].Value); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fc.errorf(n, "%s must be a single value, not %s", quoteSetting(where), describeNode(n))
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		if n.Tag != "!!int" {
			return fc.errorf(n, "%s must be a whole number, not %q", quoteSetting(where), n.Value)
		}
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return fc.errorf(n, "%s must be true or false, not %q", quoteSetting(where), n.Value)
		}
	}
	return nil
}

func (fc fileChecker) checkMapping(n *yaml.Node, t reflect.Type, where string) error {
	fields := settingsOf(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i]
		if key.Tag == "!!merge" {
			// "<<: *defaults" (or a list of them) merges settings of the same section.
			merged := n.Content[i+1]
			if merged.Kind == yaml.AliasNode || merged.Kind == yaml.MappingNode {
				merged = &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{merged}}
			}
			for _, m := range merged.Content {
				for m.Kind == yaml.AliasNode && m.Alias != nil {
					m = m.Alias
				}
				if err := fc.check(m, t, where); err != nil {
					return err
				}
			}
			continue
		}
		ft, ok := fields[key.Value]
		if !ok {
			return fc.errorf(key, "unknown setting %q%s%s", key.Value, inSetting(where), suggest(key.Value, fields))
		}
		if err := fc.check(n.Content[i+1], ft, joinSetting(where, key.Value)); err != nil {
			return err
		}
	}
	return nil
}

var bareNumber = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

func (fc fileChecker) checkDuration(n *yaml.Node, where string) error {
	if n.Kind != yaml.ScalarNode {
		return fc.errorf(n, "%s must be a duration such as 30s, 5m or 1h30m, not %s", quoteSetting(where), describeNode(n))
	}
	if bareNumber.MatchString(n.Value) && n.Value != "0" {
		return fc.errorf(n, "%s: %s has no unit; write a duration such as %ss, %sms or %sm", quoteSetting(where), n.Value, n.Value, n.Value, n.Value)
	}
	if _, err := time.ParseDuration(n.Value); err != nil {
		return fc.errorf(n, "%s must be a duration such as 30s, 5m or 1h30m, not %q", quoteSetting(where), n.Value)
	}
	return nil
}

// settingsOf lists the settings of struct type t by their YAML names.
func settingsOf(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	return fields
}

// suggest names the known setting key was probably meant to be, as " (did you mean …?)".
func suggest(key string, fields map[string]reflect.Type) string {
	if r, ok := renamed[key]; ok {
		return " (in the config file it is " + r + ")"
	}
	best, bestDist := "", len(key)/3+2
	for name := range fields {
		d := editDistance(strings.ToLower(key), strings.ToLower(name))
		if d < bestDist || d == bestDist && name < best {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev, cur := make([]int, len(rb)+1), make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

func joinSetting(where, name string) string {
	if where == "" {
		return name
	}
	return where + "." + name
}

func inSetting(where string) string {
	if where == "" {
		return ""
	}
	return fmt.Sprintf(" in %q", where)
}

func quoteSetting(where string) string {
	if where == "" {
		return "the file"
	}
	return strconv.Quote(where)
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError renders an error of the YAML parser or decoder as file:line: message.
func (fc fileChecker) yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		err = errors.New(te.Errors[0])
	}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%s:%s: %s", fc.file, m[1], m[2])
	}
	return fmt.Errorf("%s: %s", fc.file, strings.TrimPrefix(err.Error(), "yaml: "))
}
