package cli

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestValidateReadyFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{name: "unset", path: ""},
		{name: "in a directory", path: filepath.Join(dir, "ready.json")},
		{name: "no such directory", path: filepath.Join(dir, "nope", "ready.json"), wantErr: "no such file"},
		{name: "parent is a file", path: filepath.Join(file, "ready.json"), wantErr: "not a directory"},
		{name: "a directory", path: dir + string(filepath.Separator), wantErr: "want a file name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateReadyFile(tc.path)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("ValidateReadyFile(%q) = %v, want %q", tc.path, err, tc.wantErr)
			}
		})
	}
}

// TestReadyFileRoundTrip writes, overwrites, reads and removes a ready
// file, and checks no temporary file is left beside it.
func TestReadyFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ready.json")
	if _, err := ReadReadyFile(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before the write: %v, want ErrNotExist", err)
	}
	if err := WriteReadyFile("", Ready{HTTP: "x"}); err != nil {
		t.Fatalf("an empty path writes nothing: %v", err)
	}
	for _, want := range []Ready{
		{PID: 7, HTTP: "127.0.0.1:1", GRPC: "127.0.0.1:2"},
		{UDP: []string{"127.0.0.1:3"}, Public: []string{"127.0.0.1:3"}, GRPC: "127.0.0.1:4", GRPCAdvertise: "127.0.0.1:4", HTTP: "127.0.0.1:5"},
		{UDP: []string{"127.0.0.1:3"}, Public: []string{"127.0.0.1:3"}, TCP: []string{"127.0.0.1:3"}, PublicTCP: []string{"203.0.113.7:443"},
			GRPC: "127.0.0.1:4", GRPCAdvertise: "127.0.0.1:4", HTTP: "127.0.0.1:5"},
	} {
		if err := WriteReadyFile(path, want); err != nil {
			t.Fatal(err)
		}
		got, err := ReadReadyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want.PID == 0 {
			want.PID = os.Getpid()
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read %+v, want %+v", got, want)
		}
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), "relay_grpc") || !strings.Contains(string(b), `"grpc_advertise"`) ||
		!strings.Contains(string(b), `"tcp": [`) || !strings.Contains(string(b), `"public_tcp": [`) {
		t.Errorf("unset fields must be left out, set ones named as documented:\n%s", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the ready file", len(entries))
	}
	if err := RemoveReadyFile(path); err != nil {
		t.Fatal(err)
	}
	if err := RemoveReadyFile(path); err != nil {
		t.Fatalf("removing a missing file: %v", err)
	}
}
