package config_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kpool-go/kpool/cmd/kpool/internal/config"
	"github.com/kpool-go/kpool/discovery/consul"
	"github.com/kpool-go/kpool/grpcpool"
	"github.com/kpool-go/kpool/keyedpool"
)

// notInFile lists the fields of the libraries' configurations that the
// file has no key for, each with the reason. A field added to a library
// fails TestFileInStepWithLibraries until it gets a key or a line here.
var notInFile = map[string]string{
	"keyedpool.Config.EvictionPolicy":         "a policy is code; the file keeps keyedpool's default",
	"keyedpool.Config.SwallowedErrorListener": "a listener is code; kpool start counts background errors in its metrics",
	"keyedpool.AbandonedConfig.Logger":        "a logger is code; records go to the program's logger",

	"grpcpool.Config.NewStub":              "a stub constructor is code; kpool start pools bare connections",
	"grpcpool.Config.Target":               "kpool start's keys are endpoint addresses, which are the targets",
	"grpcpool.Config.TransportCredentials": "credentials other than TLS (ALTS, xDS) are code",
	"grpcpool.Config.Classifier":           "a classifier is code; the default one serves",
	"grpcpool.Config.Observer":             "kpool start sets the metrics' observer",
	"grpcpool.Config.DialOptions":          "dial options are code",

	"consul.Config.HTTPClient":  "an HTTP client is code; tls configures the one kpool start makes",
	"consul.Config.BackoffBase": "the retry pacing of failed lookups keeps consul's defaults",
	"consul.Config.BackoffMax":  "the retry pacing of failed lookups keeps consul's defaults",
}

// fileOnly lists the keys of the file that no library field has.
var fileOnly = map[string]string{
	"config.Consul.Service": "the name in Consul is per service; one Resolver serves them all",
}

// TestFileInStepWithLibraries checks, field by field, that every field of
// keyedpool.Config (and grpcpool.Config, consul.Config) has a key in
// the file under the same Go name, or is listed in notInFile with a
// reason, and that the file has no key the library lacks.
func TestFileInStepWithLibraries(t *testing.T) {
	used := map[string]bool{}
	inStep(t, used, reflect.TypeFor[keyedpool.Config](), reflect.TypeFor[config.Pool]())
	inStep(t, used, reflect.TypeFor[grpcpool.Config[string, int]](), reflect.TypeFor[config.GRPC]())
	inStep(t, used, reflect.TypeFor[consul.Config](), reflect.TypeFor[config.Consul]())
	for name := range notInFile {
		if !used[name] {
			t.Errorf("notInFile lists %s, which is not a field", name)
		}
	}
	for name := range fileOnly {
		if !used[name] {
			t.Errorf("fileOnly lists %s, which is not a field", name)
		}
	}
}

// typeName is "keyedpool.Config" for keyedpool.Config and its
// instances.
func typeName(t reflect.Type) string {
	name, _, _ := strings.Cut(t.String(), "[")
	return name
}

func yamlKey(f reflect.StructField) string {
	key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if key == "-" {
		return ""
	}
	return key
}

func kpoolStruct(t reflect.Type) (reflect.Type, bool) {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t, t.Kind() == reflect.Struct && strings.HasPrefix(t.PkgPath(), "github.com/kpool-go/kpool/")
}

func inStep(t *testing.T, used map[string]bool, lib, file reflect.Type) {
	t.Helper()
	for i := range lib.NumField() {
		lf := lib.Field(i)
		name := typeName(lib) + "." + lf.Name
		ff, inFile := file.FieldByName(lf.Name)
		inFile = inFile && yamlKey(ff) != ""
		if reason, ok := notInFile[name]; ok {
			used[name] = true
			if inFile {
				t.Errorf("%s has the key %s in %v, yet notInFile says: %s", name, yamlKey(ff), file, reason)
			}
			continue
		}
		if !inFile {
			t.Errorf("%s has no key in the file (%v): add one, or list it in notInFile with the reason", name, file)
			continue
		}
		if lt, ok := kpoolStruct(lf.Type); ok {
			if ft, ok := kpoolStruct(ff.Type); ok {
				inStep(t, used, lt, ft)
			}
		}
	}
	for i := range file.NumField() {
		ff := file.Field(i)
		name := typeName(file) + "." + ff.Name
		if yamlKey(ff) == "" {
			continue
		}
		if _, ok := fileOnly[name]; ok {
			used[name] = true
			continue
		}
		if _, ok := lib.FieldByName(ff.Name); !ok {
			t.Errorf("the file's key %s (%s) has no field in %v: name it as the library does, or list it in fileOnly", yamlKey(ff), name, lib)
		}
	}
}

// TestKeyedPoolMapsEveryKey writes every key of the pool section with a
// value that is not its default and checks each reaches its field of
// keyedpool.Config.
func TestKeyedPoolMapsEveryKey(t *testing.T) {
	var b strings.Builder
	b.WriteString(minimal + "pool:\n")
	writeKeys(&b, reflect.TypeFor[config.Pool](), "  ")
	f, err := config.Parse("kpool.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("Parse() = %v\nfile:\n%s", err, b.String())
	}
	checkSet(t, reflect.ValueOf(f.KeyedPool()), reflect.TypeFor[config.Pool](), "keyedpool.Config")
}

// A value of each kind of key, none a default.
const (
	someInt      = 5
	someDuration = 7 * time.Second
)

func writeKeys(b *strings.Builder, t reflect.Type, indent string) {
	for i := range t.NumField() {
		f := t.Field(i)
		key := yamlKey(f)
		if key == "" {
			continue
		}
		switch {
		case f.Type == reflect.TypeFor[config.Duration]():
			fmt.Fprintf(b, "%s%s: %v\n", indent, key, someDuration)
		case f.Type == reflect.TypeFor[config.Exhausted]():
			fmt.Fprintf(b, "%s%s: fail\n", indent, key)
		case f.Type.Kind() == reflect.Int:
			fmt.Fprintf(b, "%s%s: %d\n", indent, key, someInt)
		case f.Type.Kind() == reflect.Bool:
			fmt.Fprintf(b, "%s%s: true\n", indent, key)
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			fmt.Fprintf(b, "%s%s:\n", indent, key)
			writeKeys(b, f.Type.Elem(), indent+"  ")
		default:
			panic(fmt.Sprintf("writeKeys: no value for %s of type %v", key, f.Type))
		}
	}
}

// checkSet checks that each field of v, a library config, that the file
// type ft has a key for holds the value writeKeys wrote.
func checkSet(t *testing.T, v reflect.Value, ft reflect.Type, name string) {
	t.Helper()
	for i := range ft.NumField() {
		f := ft.Field(i)
		if yamlKey(f) == "" {
			continue
		}
		field := name + "." + f.Name
		got := v.FieldByName(f.Name)
		var ok bool
		switch {
		case got.Type() == reflect.TypeFor[time.Duration]():
			ok = got.Interface() == someDuration
		case got.Type() == reflect.TypeFor[keyedpool.ExhaustedAction]():
			ok = got.Interface() == keyedpool.Fail
		case got.Kind() == reflect.Int:
			ok = got.Int() == someInt
		case got.Kind() == reflect.Bool:
			ok = got.Bool()
		case got.Kind() == reflect.Pointer:
			if ok = !got.IsNil(); ok {
				checkSet(t, got.Elem(), f.Type.Elem(), field)
			}
		}
		if !ok {
			t.Errorf("%s = %v after every pool key was set: the file's %s does not reach it", field, got, yamlKey(f))
		}
	}
}
