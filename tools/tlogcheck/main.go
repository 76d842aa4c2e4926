// tlogcheck checks a running access-audit's verifiable log with Go's own transparency-log
// code (golang.org/x/mod/sumdb/note and sumdb/tlog), which nobody on the project wrote:
//
//   - the served checkpoint opens with the served vkey (a C2SP signed note, Ed25519);
//   - the hash tiles rebuild the checkpoint's root (tlog.TileHashReader checks every tile
//     it reads against the signed tree, and tlog.TreeHash folds them);
//   - for random events: the entry bundle's bytes hash to the leaf (tlog.RecordHash), and
//     both the service's inclusion proof and one Go builds from the tiles pass
//     tlog.CheckRecord;
//   - given an older checkpoint (-old FILE), the service's consistency proof and one Go
//     builds from the tiles pass tlog.CheckTree.
//
// Build with Debian's golang-go and golang-golang-x-mod-dev, without modules:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tlogcheck ./tools/tlogcheck
//
// Usage: tlogcheck -url http://127.0.0.1:8000 -token TOKEN [-old FILE] [-samples 40]
// (TOKEN: an auditor's or oversight officer's bearer token). Exit status 1 on any failure.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var (
	base    = flag.String("url", "http://127.0.0.1:8000", "the service's base URL")
	token   = flag.String("token", "", "an auditor's or oversight officer's bearer token")
	oldFile = flag.String("old", "", "an older checkpoint note, to check consistency from")
	samples = flag.Int("samples", 40, "how many random events to prove")
)

func get(path string, auth bool) ([]byte, error) {
	request, err := http.NewRequest("GET", *base+path, nil)
	if err != nil {
		return nil, err
	}
	if auth {
		request.Header.Set("Authorization", "Bearer "+*token)
	}
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, err
	}
	if response.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", path, response.StatusCode, body)
	}
	return body, nil
}

// open checks a checkpoint note's signature and parses its body (origin, size, root).
func open(msg []byte, verifier note.Verifier) (tlog.Tree, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("opening the checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return tlog.Tree{}, fmt.Errorf("the checkpoint's origin is not the key's name %q", verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("the checkpoint's size: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return tlog.Tree{}, fmt.Errorf("the checkpoint's root is not a base64 hash")
	}
	var root tlog.Hash
	copy(root[:], raw)
	return tlog.Tree{N: size, Hash: root}, nil
}

// tiles reads C2SP hash tiles (Go's tile paths without the height element).
type tiles struct{}

func (tiles) Height() int { return 8 }

func (tiles) ReadTiles(want []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(want))
	for i, t := range want {
		path := strings.TrimPrefix(t.Path(), "tile/8/")
		body, err := get("/v1/log/tile/"+path, false)
		if err != nil {
			return nil, err
		}
		data[i] = body
	}
	return data, nil
}

func (tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func hashes(encoded []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(encoded))
	for i, text := range encoded {
		raw, err := base64.StdEncoding.DecodeString(text)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("a proof hash is not a base64 hash: %q", text)
		}
		copy(out[i][:], raw)
	}
	return out, nil
}

// entry returns the canonical bytes of leaf `index` from its entry bundle.
func entry(index, size int64) ([]byte, error) {
	n := index / 256
	path := tlog.Tile{H: 8, L: 0, N: n, W: 256}.Path()
	if width := size - n*256; width < 256 {
		path = tlog.Tile{H: 8, L: 0, N: n, W: int(width)}.Path()
	}
	path = "entries/" + strings.TrimPrefix(path, "tile/8/0/")
	bundle, err := get("/v1/log/tile/"+path, true)
	if err != nil {
		return nil, err
	}
	for i := int64(0); len(bundle) >= 2; i++ {
		length := int(bundle[0])<<8 | int(bundle[1])
		if len(bundle) < 2+length {
			return nil, fmt.Errorf("entry bundle %d is cut short", n)
		}
		if i == index%256 {
			return bundle[2 : 2+length], nil
		}
		bundle = bundle[2+length:]
	}
	return nil, fmt.Errorf("entry bundle %d does not hold leaf %d", n, index)
}

func checkInclusion(tree tlog.Tree, reader tlog.HashReader, index int64) error {
	data, err := entry(index, tree.N)
	if err != nil {
		return err
	}
	leaf := tlog.RecordHash(data)
	body, err := get(fmt.Sprintf("/v1/log/proof/inclusion?seq=%d&size=%d", index+1, tree.N), true)
	if err != nil {
		return err
	}
	var served struct {
		Index    int64    `json:"index"`
		TreeSize int64    `json:"tree_size"`
		LeafHash string   `json:"leaf_hash"`
		Hashes   []string `json:"hashes"`
	}
	if err := json.Unmarshal(body, &served); err != nil {
		return err
	}
	if served.Index != index || served.TreeSize != tree.N {
		return fmt.Errorf("the proof of leaf %d names leaf %d of size %d", index, served.Index, served.TreeSize)
	}
	if served.LeafHash != base64.StdEncoding.EncodeToString(leaf[:]) {
		return fmt.Errorf("leaf %d: the served leaf hash is not the entry's", index)
	}
	proof, err := hashes(served.Hashes)
	if err != nil {
		return err
	}
	if err := tlog.CheckRecord(proof, tree.N, tree.Hash, index, leaf); err != nil {
		return fmt.Errorf("leaf %d: the service's inclusion proof: %v", index, err)
	}
	own, err := tlog.ProveRecord(tree.N, index, reader)
	if err != nil {
		return fmt.Errorf("leaf %d: proving from the tiles: %v", index, err)
	}
	if err := tlog.CheckRecord(own, tree.N, tree.Hash, index, leaf); err != nil {
		return fmt.Errorf("leaf %d: the proof built from the tiles: %v", index, err)
	}
	return nil
}

func checkConsistency(old, tree tlog.Tree, reader tlog.HashReader) error {
	body, err := get(fmt.Sprintf("/v1/log/proof/consistency?old=%d&new=%d", old.N, tree.N), false)
	if err != nil {
		return err
	}
	var served struct {
		Hashes []string `json:"hashes"`
	}
	if err := json.Unmarshal(body, &served); err != nil {
		return err
	}
	proof, err := hashes(served.Hashes)
	if err != nil {
		return err
	}
	if err := tlog.CheckTree(proof, tree.N, tree.Hash, old.N, old.Hash); err != nil {
		return fmt.Errorf("the service's consistency proof %d -> %d: %v", old.N, tree.N, err)
	}
	own, err := tlog.ProveTree(tree.N, old.N, reader)
	if err != nil {
		return fmt.Errorf("proving consistency from the tiles: %v", err)
	}
	if err := tlog.CheckTree(own, tree.N, tree.Hash, old.N, old.Hash); err != nil {
		return fmt.Errorf("the consistency proof built from the tiles: %v", err)
	}
	return nil
}

func run() error {
	vkey, err := get("/v1/log/key", false)
	if err != nil {
		return err
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return fmt.Errorf("the served vkey: %v", err)
	}
	msg, err := get("/v1/log/checkpoint", false)
	if err != nil {
		return err
	}
	tree, err := open(msg, verifier)
	if err != nil {
		return err
	}
	if tree.N == 0 {
		return fmt.Errorf("the checkpoint is of the empty tree: nothing to prove")
	}
	reader := tlog.TileHashReader(tree, tiles{})
	root, err := tlog.TreeHash(tree.N, reader)
	if err != nil {
		return fmt.Errorf("folding the tiles: %v", err)
	}
	if root != tree.Hash {
		return fmt.Errorf("the tiles fold to another root")
	}
	fmt.Printf("checkpoint of %d events opens with %s; the tiles fold to its root\n", tree.N, verifier.Name())
	indexes := []int64{0, tree.N - 1}
	for i := 0; i < *samples; i++ {
		indexes = append(indexes, rand.Int63n(tree.N))
	}
	for _, index := range indexes {
		if err := checkInclusion(tree, reader, index); err != nil {
			return err
		}
	}
	fmt.Printf("%d inclusion proofs pass tlog.CheckRecord (the service's and Go's own)\n", len(indexes))
	if *oldFile != "" {
		older, err := os.ReadFile(*oldFile)
		if err != nil {
			return err
		}
		old, err := open(older, verifier)
		if err != nil {
			return err
		}
		if old.N == tree.N {
			return fmt.Errorf("the older checkpoint has the same size %d: the log did not grow", old.N)
		}
		if err := checkConsistency(old, tree, reader); err != nil {
			return err
		}
		fmt.Printf("checkpoint %d is consistent with checkpoint %d (tlog.CheckTree)\n", tree.N, old.N)
	}
	return nil
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "FAILED:", err)
		os.Exit(1)
	}
}
