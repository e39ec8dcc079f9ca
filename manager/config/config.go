// Package config loads a process's settings from, in increasing order of
// precedence, its defaults, a YAML file, environment variables and
// command-line flags — the same way for every Sluice process.
//
// A settings struct is flat; each field carries
//
//	yaml:"key-name"     the key in the YAML file, and the flag name (--key-name)
//	help:"..."          the flag's help text
//
// and the environment variable is <PREFIX>_KEY_NAME. Supported field types:
// string, []string (comma-separated on the command line and in the
// environment, a list or a comma-separated string in YAML), bool, int,
// uint32, uint64, float64, time.Duration ("2s") and Bytes ("64MiB").
//
// Unknown YAML keys are an error that names every one of them with its line.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Bytes is a size in bytes that reads and prints with binary units
// ("512KiB", "64MiB", "5GiB", or a plain number of bytes).
type Bytes uint64

var byteUnits = []struct {
	suffix string
	mult   uint64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1},
}

// ParseBytes parses a size such as "64MiB", "5 GiB", "1.5G" or "4096".
func ParseBytes(s string) (Bytes, error) {
	t := strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	if n, err := strconv.ParseUint(t, 10, 64); err == nil {
		if mult != 0 && n > ^uint64(0)/mult {
			return 0, fmt.Errorf("size %q overflows", s)
		}
		return Bytes(n * mult), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	// Written so that NaN, which ParseFloat accepts and which compares
	// false with everything, is refused too.
	if err != nil || !(f >= 0) {
		return 0, fmt.Errorf("invalid size %q (want e.g. 64MiB, 5GiB, 4096)", s)
	}
	if f*float64(mult) >= 1<<64 {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return Bytes(f * float64(mult)), nil
}

func (b Bytes) String() string {
	for _, u := range byteUnits[:4] {
		if b != 0 && uint64(b)%u.mult == 0 {
			return fmt.Sprintf("%d%s", uint64(b)/u.mult, u.suffix)
		}
	}
	return strconv.FormatUint(uint64(b), 10)
}

// Set parses a size, making *Bytes a flag.Value.
func (b *Bytes) Set(s string) error {
	v, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML accepts a number or a string with a unit.
func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseBytes(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML prints the size with its unit.
func (b Bytes) MarshalYAML() (any, error) { return b.String(), nil }

// LoadYAML decodes the YAML file at path into settings (a pointer to a
// struct), leaving fields the file does not mention unchanged. Unknown keys
// are an error naming each of them.
func LoadYAML(path string, settings any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return DecodeYAML(path, data, settings)
}

// DecodeYAML is LoadYAML on bytes; name is used in messages.
func DecodeYAML(name string, data []byte, settings any) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(root.Content) == 0 {
		return nil // empty file
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: the top level must be a mapping of key: value", name)
	}
	known := map[string]bool{}
	for _, f := range fields(settings) {
		known[f.key] = true
	}
	var unknown []string
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k := doc.Content[i]
		if !known[k.Value] {
			unknown = append(unknown, fmt.Sprintf("%q (line %d)", k.Value, k.Line))
		}
	}
	if len(unknown) > 0 {
		keys := make([]string, 0, len(known))
		for k := range known {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return fmt.Errorf("%s: unknown key(s) %s; known keys: %s", name, strings.Join(unknown, ", "), strings.Join(keys, ", "))
	}
	if err := decodeFields(doc, settings); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// decodeFields decodes each key of doc into its field, accepting the
// comma-separated form for lists.
func decodeFields(doc *yaml.Node, settings any) error {
	byKey := map[string]field{}
	for _, f := range fields(settings) {
		byKey[f.key] = f
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		f := byKey[k.Value]
		if f.value.Kind() == reflect.Slice && v.Kind == yaml.ScalarNode {
			if err := setString(f.value, v.Value); err != nil {
				return fmt.Errorf("line %d: %s: %w", v.Line, k.Value, err)
			}
			continue
		}
		if f.value.Type() == reflect.TypeOf(time.Duration(0)) {
			d, err := time.ParseDuration(v.Value)
			if err != nil {
				return fmt.Errorf("line %d: %s: invalid duration %q (want e.g. 2s, 500ms, 1m)", v.Line, k.Value, v.Value)
			}
			f.value.SetInt(int64(d))
			continue
		}
		if err := v.Decode(f.value.Addr().Interface()); err != nil {
			return fmt.Errorf("line %d: %s: %w", v.Line, k.Value, err)
		}
	}
	return nil
}

type field struct {
	key, help string
	value     reflect.Value
}

func fields(settings any) []field {
	v := reflect.ValueOf(settings)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic("config: settings must be a pointer to a struct")
	}
	return structFields(v.Elem())
}

// structFields lists the keyed fields of a struct value; an exported struct
// field tagged `yaml:",inline"` contributes its own fields at the same level
// (one file, one set of flags and variables for settings shared by
// several commands).
func structFields(v reflect.Value) []field {
	t := v.Type()
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if key == "" && opts == "inline" && sf.IsExported() && sf.Type.Kind() == reflect.Struct {
			fs = append(fs, structFields(v.Field(i))...)
			continue
		}
		if key == "" || key == "-" || !sf.IsExported() {
			continue
		}
		fs = append(fs, field{key: key, help: sf.Tag.Get("help"), value: v.Field(i)})
	}
	return fs
}

// EnvName is the environment variable of a key: PREFIX_KEY_NAME.
func EnvName(prefix, key string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(key, "-", "_"))
}

// ApplyEnv sets every field whose environment variable is set.
func ApplyEnv(prefix string, settings any) error {
	var errs []error
	for _, f := range fields(settings) {
		name := EnvName(prefix, f.key)
		if s, ok := os.LookupEnv(name); ok {
			if err := setString(f.value, s); err != nil {
				errs = append(errs, fmt.Errorf("environment %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func setString(v reflect.Value, s string) error {
	switch p := v.Addr().Interface().(type) {
	case *string:
		*p = s
	case *[]string:
		*p = nil
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("invalid boolean %q", s)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		*p = n
	case *uint32:
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		*p = uint32(n)
	case *uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		*p = f
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("invalid duration %q (want e.g. 2s, 500ms, 1m)", s)
		}
		*p = d
	case *Bytes:
		b, err := ParseBytes(s)
		if err != nil {
			return err
		}
		*p = b
	default:
		return fmt.Errorf("unsupported setting type %s", v.Type())
	}
	return nil
}

func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case []string:
		return strings.Join(x, ",")
	default:
		return fmt.Sprint(x)
	}
}

// Flags binds one flag per setting to fs. Call Load after fs.Parse.
type Flags struct {
	fs       *flag.FlagSet
	prefix   string
	settings any
	set      map[string]string
}

type recorder struct {
	name  string
	flags *Flags
	value reflect.Value
}

func (r *recorder) String() string {
	if !r.value.IsValid() {
		return ""
	}
	return formatValue(r.value)
}

func (r *recorder) Set(s string) error {
	if err := setString(r.value, s); err != nil {
		return err
	}
	r.flags.set[r.name] = s
	return nil
}

func (r *recorder) IsBoolFlag() bool { return r.value.Kind() == reflect.Bool }

func typeName(v reflect.Value) string {
	switch v.Interface().(type) {
	case time.Duration:
		return "duration"
	case Bytes:
		return "size"
	case []string:
		return "list"
	case bool:
		return "bool"
	case string:
		return "string"
	default:
		return "number"
	}
}

// Bind registers a flag for every field of settings (whose current values
// are the defaults shown by --help), naming its environment variable in the
// help text.
func Bind(fs *flag.FlagSet, envPrefix string, settings any) *Flags {
	f := &Flags{fs: fs, prefix: envPrefix, settings: settings, set: map[string]string{}}
	for _, fd := range fields(settings) {
		// flag.PrintDefaults shows the first back-quoted word as the
		// value's name: "-reserve size ... [size, $PREFIX_RESERVE]".
		help := fd.help + " [`" + typeName(fd.value) + "`"
		if envPrefix != "" {
			help += ", $" + EnvName(envPrefix, fd.key)
		}
		help += "]"
		fs.Var(&recorder{name: fd.key, flags: f, value: fd.value}, fd.key, help)
	}
	return f
}

// Load applies, over the defaults already in settings, the YAML file at path
// (if path is not empty), the environment, and the flags set on the command
// line, in that order of precedence.
func (f *Flags) Load(path string) error {
	if path != "" {
		if err := LoadYAML(path, f.settings); err != nil {
			return err
		}
	}
	if f.prefix != "" {
		if err := ApplyEnv(f.prefix, f.settings); err != nil {
			return err
		}
	}
	byKey := map[string]field{}
	for _, fd := range fields(f.settings) {
		byKey[fd.key] = fd
	}
	for name, s := range f.set {
		if err := setString(byKey[name].value, s); err != nil {
			return fmt.Errorf("flag --%s: %w", name, err)
		}
	}
	return nil
}

// Dump writes settings as YAML (every key, for --print-config).
func Dump(settings any) ([]byte, error) {
	var node yaml.Node
	node.Kind = yaml.MappingNode
	for _, f := range fields(settings) {
		var v yaml.Node
		if err := v.Encode(f.value.Interface()); err != nil {
			return nil, fmt.Errorf("encode %s: %w", f.key, err)
		}
		if f.value.Type() == reflect.TypeOf(time.Duration(0)) {
			v = yaml.Node{Kind: yaml.ScalarNode, Value: f.value.Interface().(time.Duration).String()}
		}
		k := yaml.Node{Kind: yaml.ScalarNode, Value: f.key}
		if f.help != "" {
			k.HeadComment = f.help
		}
		node.Content = append(node.Content, &k, &v)
	}
	return yaml.Marshal(&node)
}
