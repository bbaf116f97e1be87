// Command checkpoint-verify checks mcptrail's signed Merkle checkpoints and evidence bundles
// with an implementation that shares no code with mcptrail: the Go reference packages
// golang.org/x/mod/sumdb/note (C2SP signed notes, Ed25519) and golang.org/x/mod/sumdb/tlog
// (RFC 6962 / RFC 9162 Merkle trees, as used by the Go checksum database).
//
// Usage:
//
//	checkpoint-verify [flags] DATA_DIR
//	checkpoint-verify [flags] -vkey FILE -checkpoint FILE [-checkpoint FILE...] SEGMENT...
//	checkpoint-verify [-vkey FILE] -bundle FILE
//
// With DATA_DIR (an mcptrail data directory) the key defaults to DATA_DIR/keys/checkpoint.vkey,
// the checkpoints to every DATA_DIR/checkpoints/cp-*.note and the records to the lines of
// DATA_DIR/ledger/seg-*.jsonl, segments in name order. Otherwise the segment files are read in
// the order given. Only '\n'-terminated lines are records (an unterminated tail is a write in
// progress and is ignored, as mcptrail does); a line is the stored bytes without the '\n'.
//
// Reading the ledger, it also checks the hash chain: each record's "prev_hash" is the hex of the
// previous record's leaf hash (all zeros before the first record).
//
// For every checkpoint it checks, one output line per check:
//
//   - signature: note.Open with note.NewVerifier(vkey) accepts the note;
//   - checkpoint: the body is a C2SP tlog-checkpoint (origin, decimal size, base64 root) whose
//     origin is the key's name and whose size matches the cp-<size>.note file name;
//   - root: tlog.TreeHash over the first size records equals the signed root, where record i
//     (seq i+1) is the leaf tlog.RecordHash(body) = SHA-256(0x00 || body), the body being the
//     stored line without its trailing `,"mac":"<epoch>:<hex>[:<hex>]"` member (the MAC is
//     not part of what the tree and the chain cover);
//   - inclusion: for -proofs leaf indices spread over the tree, tlog.ProveRecord's proof
//     passes tlog.CheckRecord against the signed root;
//   - consistency: between consecutive checkpoints, tlog.ProveTree's proof passes
//     tlog.CheckTree (the later tree extends the earlier one).
//
// For every -bundle (an mcptrail evidence bundle, "mcptrail-evidence-bundle v2") it checks the
// bundle's checkpoint note (and its signed statement) with the trusted key (-vkey or the data
// directory's; without either, the bundle's own key, which only proves self-consistency), that
// the bundle's key is the trusted key, and each event's inclusion proof (hex, leaf first) with
// tlog.CheckRecord against the bundle's checkpoint root. When the ledger is also given and
// holds the bundle's tree, the proofs must equal tlog.ProveRecord's hash for hash.
//
// Lines start with "ok" or "FAIL". The exit status is 0 when every check passed, 1 when any
// failed and 2 on a usage error.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const bundleFormat = "mcptrail-evidence-bundle v2"

// macMember is the MAC member that ends a line written with MACs on, before the closing brace.
var macMember = regexp.MustCompile(`,"mac":"[0-9]{1,20}:[0-9a-f]{64}(:[0-9a-f]{64})?"\}$`)

// prevHash is the chain link that ends a line's body.
var prevHash = regexp.MustCompile(`"prev_hash":"([0-9a-f]{64})"\}$`)

// body is a stored line without its MAC member: what the leaf hash and the chain cover.
func body(line []byte) []byte {
	if loc := macMember.FindIndex(line); loc != nil {
		out := append([]byte{}, line[:loc[0]]...)
		return append(out, '}')
	}
	return line
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

var failures int

func pass(check, subject, format string, args ...interface{}) {
	fmt.Printf("ok   %-11s %s: %s\n", check, subject, fmt.Sprintf(format, args...))
}

func fail(check, subject, format string, args ...interface{}) {
	failures++
	fmt.Printf("FAIL %-11s %s: %s\n", check, subject, fmt.Sprintf(format, args...))
}

func usage(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "checkpoint-verify: "+format+"\n", args...)
	flag.Usage()
	os.Exit(2)
}

// ledgerTree holds the tlog "stored hashes" of the ledger's records (the layout of
// tlog.StoredHashIndex), so that tlog's functions can read any subtree hash.
type ledgerTree struct {
	records int64
	stored  []tlog.Hash
	last    tlog.Hash
	// The first record whose prev_hash does not link to its predecessor, if any.
	chainBreak string
}

func (t *ledgerTree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.stored)) {
			return nil, fmt.Errorf("stored hash %d is beyond the ledger's %d records", x, t.records)
		}
		out[i] = t.stored[x]
	}
	return out, nil
}

func (t *ledgerTree) add(line []byte) error {
	b := body(line)
	m := prevHash.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("record %d has no prev_hash at the end of its body", t.records+1)
	}
	want := strings.Repeat("0", 64)
	if t.records > 0 {
		want = hex.EncodeToString(t.last[:])
	}
	if string(m[1]) != want && t.chainBreak == "" {
		// Reported once, by main; the tree is still built so each checkpoint is judged.
		t.chainBreak = fmt.Sprintf("record %d: prev_hash %s is not the previous record's leaf hash %s", t.records+1, m[1], want)
	}
	leaf := tlog.RecordHash(b)
	t.last = leaf
	hashes, err := tlog.StoredHashesForRecordHash(t.records, leaf, t)
	if err != nil {
		return err
	}
	t.stored = append(t.stored, hashes...)
	t.records++
	return nil
}

func readLedger(segments []string) (*ledgerTree, error) {
	t := &ledgerTree{}
	for _, seg := range segments {
		data, err := os.ReadFile(seg)
		if err != nil {
			return nil, err
		}
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				fmt.Printf("note ledger      %s: ignoring an unterminated last line of %d bytes\n", seg, len(data))
				break
			}
			if err := t.add(data[:i]); err != nil {
				return nil, err
			}
			data = data[i+1:]
		}
	}
	return t, nil
}

// root of the first n records: tlog.TreeHash, except for the empty tree, where tlog says all
// zeros and RFC 9162 (mcptrail) says SHA-256 of nothing.
func (t *ledgerTree) root(n int64) (tlog.Hash, error) {
	if n > t.records {
		return tlog.Hash{}, fmt.Errorf("the ledger holds only %d records, fewer than %d", t.records, n)
	}
	if n == 0 {
		return tlog.Hash(sha256.Sum256(nil)), nil
	}
	return tlog.TreeHash(n, t)
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
	ext    int
}

// parseCheckpoint parses a C2SP tlog-checkpoint body (the text of an opened note).
func parseCheckpoint(text string) (checkpoint, error) {
	var cp checkpoint
	if !strings.HasSuffix(text, "\n") {
		return cp, errors.New("no final newline")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return cp, fmt.Errorf("%d lines, want origin, size and root", len(lines))
	}
	cp.origin = lines[0]
	if cp.origin == "" {
		return cp, errors.New("empty origin")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return cp, fmt.Errorf("size %q is not a canonical decimal number", lines[1])
	}
	cp.size = size
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return cp, fmt.Errorf("root %q is not base64 of %d bytes", lines[2], tlog.HashSize)
	}
	copy(cp.root[:], root)
	for _, e := range lines[3:] {
		if e == "" {
			return cp, errors.New("empty extension line")
		}
	}
	cp.ext = len(lines) - 3
	return cp, nil
}

// openCheckpoint checks a checkpoint note's signature and body; reports both checks.
func openCheckpoint(subject string, msg []byte, v note.Verifier) (checkpoint, bool) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		fail("signature", subject, "note.Open: %v", err)
		return checkpoint{}, false
	}
	pass("signature", subject, "note.Open: signed by %s+%08x", n.Sigs[0].Name, n.Sigs[0].Hash)
	cp, err := parseCheckpoint(n.Text)
	if err != nil {
		fail("checkpoint", subject, "not a tlog-checkpoint: %v", err)
		return cp, false
	}
	if cp.origin != v.Name() {
		fail("checkpoint", subject, "origin %q is not the key's name %q", cp.origin, v.Name())
		return cp, false
	}
	return cp, true
}

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// spread returns up to k distinct indices in [0, n), always including the first and last.
func spread(n int64, k int) []int64 {
	if n <= 0 || k <= 0 {
		return nil
	}
	if int64(k) > n {
		k = int(n)
	}
	var out []int64
	seen := map[int64]bool{}
	for i := 0; i < k; i++ {
		x := n - 1
		if k > 1 {
			x = int64(i) * (n - 1) / int64(k-1)
		}
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

type verified struct {
	subject string
	cp      checkpoint
}

func checkCheckpoint(path string, v note.Verifier, t *ledgerTree, proofs int) (verified, bool) {
	subject := filepath.Base(path)
	msg, err := os.ReadFile(path)
	if err != nil {
		fail("signature", subject, "%v", err)
		return verified{}, false
	}
	cp, ok := openCheckpoint(subject, msg, v)
	if !ok {
		return verified{}, false
	}
	var named int64 = -1
	if s := strings.TrimSuffix(strings.TrimPrefix(subject, "cp-"), ".note"); s != subject {
		if x, err := strconv.ParseInt(s, 10, 64); err == nil {
			named = x
		}
	}
	if named >= 0 && named != cp.size {
		fail("checkpoint", subject, "the file name says size %d, the signed body %d", named, cp.size)
		return verified{}, false
	}
	pass("checkpoint", subject, "origin %s, size %d, root %s, %d extension lines", cp.origin, cp.size, b64(cp.root), cp.ext)

	got, err := t.root(cp.size)
	if err != nil {
		fail("root", subject, "%v", err)
		return verified{}, false
	}
	if got != cp.root {
		fail("root", subject, "root mismatch: the checkpoint signs %s, tlog.TreeHash of the ledger's first %d records is %s", b64(cp.root), cp.size, b64(got))
		return verified{}, false
	}
	pass("root", subject, "tlog.TreeHash(%d) of the ledger = signed root %s", cp.size, b64(got))

	for _, i := range spread(cp.size, proofs) {
		p, err := tlog.ProveRecord(cp.size, i, t)
		if err == nil {
			leaf := t.stored[tlog.StoredHashIndex(0, i)]
			err = tlog.CheckRecord(p, cp.size, cp.root, i, leaf)
		}
		if err != nil {
			fail("inclusion", subject, "record %d (seq %d): %v", i, i+1, err)
		} else {
			pass("inclusion", subject, "record %d (seq %d): tlog.ProveRecord -> tlog.CheckRecord, %d hashes", i, i+1, len(p))
		}
	}
	return verified{subject, cp}, true
}

func checkConsistency(old, cur verified, t *ledgerTree) {
	subject := old.subject + " -> " + cur.subject
	if old.cp.size == 0 || old.cp.size > cur.cp.size {
		return
	}
	p, err := tlog.ProveTree(cur.cp.size, old.cp.size, t)
	if err == nil {
		err = tlog.CheckTree(p, cur.cp.size, cur.cp.root, old.cp.size, old.cp.root)
	}
	if err != nil {
		fail("consistency", subject, "%v", err)
	} else {
		pass("consistency", subject, "tlog.ProveTree -> tlog.CheckTree, %d hashes", len(p))
	}
}

type bundleFile struct {
	Format     string  `json:"format"`
	SessionID  string  `json:"session_id"`
	Key        string  `json:"key"`
	Checkpoint string  `json:"checkpoint"`
	TreeSize   int64   `json:"tree_size"`
	Statement  *string `json:"statement"`
	Events     []struct {
		Seq   int64    `json:"seq"`
		Line  string   `json:"line"`
		Proof []string `json:"proof"`
	} `json:"events"`
}

func checkBundle(path string, trusted note.Verifier, trustedText string, t *ledgerTree) {
	subject := filepath.Base(path)
	data, err := os.ReadFile(path)
	if err != nil {
		fail("bundle", subject, "%v", err)
		return
	}
	var b bundleFile
	if err := json.Unmarshal(data, &b); err != nil {
		fail("bundle", subject, "not JSON: %v", err)
		return
	}
	if b.Format != bundleFormat {
		fail("bundle", subject, "format %q, want %q", b.Format, bundleFormat)
		return
	}
	pass("bundle", subject, "session %s, %d events, tree size %d", b.SessionID, len(b.Events), b.TreeSize)

	v := trusted
	if v == nil {
		v, err = note.NewVerifier(b.Key)
		if err != nil {
			fail("key", subject, "the bundle's key: note.NewVerifier: %v", err)
			return
		}
		pass("key", subject, "no trusted key given: using the bundle's own key %s (proves consistency, not origin)", b.Key)
	} else if strings.TrimSpace(b.Key) != trustedText {
		fail("key", subject, "the bundle's key %s is not the trusted key %s", b.Key, trustedText)
	} else {
		pass("key", subject, "the bundle's key is the trusted key")
	}

	cp, ok := openCheckpoint(subject+" checkpoint", []byte(b.Checkpoint), v)
	if !ok {
		return
	}
	if cp.size != b.TreeSize {
		fail("checkpoint", subject, "tree_size %d, the signed checkpoint says %d", b.TreeSize, cp.size)
	} else {
		pass("checkpoint", subject, "origin %s, size %d, root %s", cp.origin, cp.size, b64(cp.root))
	}
	if b.Statement == nil {
		fail("statement", subject, "the bundle carries no signed statement")
	} else if n, err := note.Open([]byte(*b.Statement), note.VerifierList(v)); err != nil {
		fail("statement", subject, "note.Open: %v", err)
	} else {
		first := strings.SplitN(n.Text, "\n", 2)[0]
		pass("statement", subject, "note.Open: %q signed by %s+%08x", first, n.Sigs[0].Name, n.Sigs[0].Hash)
	}

	// The ledger, when given and long enough, must hold the very tree the bundle proves into.
	withLedger := t != nil && t.records >= cp.size
	if withLedger {
		if r, err := t.root(cp.size); err != nil || r != cp.root {
			fail("root", subject, "root mismatch: the bundle's checkpoint signs %s, the ledger's first %d records hash to %s", b64(cp.root), cp.size, b64(r))
			withLedger = false
		} else {
			pass("root", subject, "the ledger's tlog.TreeHash(%d) = the bundle's root", cp.size)
		}
	}

	for _, ev := range b.Events {
		es := fmt.Sprintf("%s seq %d", subject, ev.Seq)
		proof := make(tlog.RecordProof, len(ev.Proof))
		bad := false
		for i, h := range ev.Proof {
			raw, err := hex.DecodeString(h)
			if err != nil || len(raw) != tlog.HashSize {
				bad = true
				break
			}
			copy(proof[i][:], raw)
		}
		if bad {
			fail("inclusion", es, "the proof is not hex SHA-256 hashes")
			continue
		}
		if ev.Seq < 1 || ev.Seq > cp.size {
			fail("inclusion", es, "seq is outside the checkpoint's %d records", cp.size)
			continue
		}
		leaf := tlog.RecordHash(body([]byte(ev.Line)))
		if err := tlog.CheckRecord(proof, cp.size, cp.root, ev.Seq-1, leaf); err != nil {
			fail("inclusion", es, "tlog.CheckRecord with the bundle's proof: %v", err)
			continue
		}
		pass("inclusion", es, "tlog.CheckRecord with the bundle's %d-hash proof", len(proof))
		if withLedger {
			mine, err := tlog.ProveRecord(cp.size, ev.Seq-1, t)
			switch {
			case err != nil:
				fail("same-proof", es, "tlog.ProveRecord: %v", err)
			case !sameProof(mine, proof):
				fail("same-proof", es, "the bundle's proof differs from tlog.ProveRecord's")
			default:
				pass("same-proof", es, "identical to tlog.ProveRecord over the ledger")
			}
		}
	}
}

func sameProof(a, b tlog.RecordProof) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// loadVerifier reads a vkey file; it returns the verifier and the key's text.
func loadVerifier(path string) (note.Verifier, string) {
	data, err := os.ReadFile(path)
	if err != nil {
		usage("reading the key: %v", err)
	}
	text := strings.TrimSpace(string(data))
	v, err := note.NewVerifier(text)
	if err != nil {
		fail("key", path, "note.NewVerifier: %v", err)
		os.Exit(1)
	}
	pass("key", filepath.Base(path), "note.NewVerifier: %s+%08x", v.Name(), v.KeyHash())
	return v, text
}

func main() {
	var checkpoints, bundles listFlag
	vkey := flag.String("vkey", "", "public key file `FILE` (name+hash+base64); default DATA_DIR/keys/checkpoint.vkey")
	flag.Var(&checkpoints, "checkpoint", "checkpoint note `FILE` to check (repeatable); default DATA_DIR/checkpoints/cp-*.note")
	flag.Var(&bundles, "bundle", "evidence bundle `FILE` whose inclusion proofs to check (repeatable)")
	proofs := flag.Int("proofs", 8, "inclusion proofs to make and check per checkpoint")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: checkpoint-verify [flags] DATA_DIR | SEGMENT...\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	var segments []string
	args := flag.Args()
	if len(args) == 1 {
		if st, err := os.Stat(args[0]); err == nil && st.IsDir() {
			dir := args[0]
			if *vkey == "" {
				*vkey = filepath.Join(dir, "keys", "checkpoint.vkey")
			}
			if len(checkpoints) == 0 {
				found, _ := filepath.Glob(filepath.Join(dir, "checkpoints", "cp-*.note"))
				sort.Strings(found) // the size is zero-padded: name order is size order
				if len(found) == 0 {
					usage("no checkpoints in %s", filepath.Join(dir, "checkpoints"))
				}
				checkpoints = found
			}
			segments, _ = filepath.Glob(filepath.Join(dir, "ledger", "seg-*.jsonl"))
			sort.Strings(segments) // zero-padded first seq: name order is log order
			if len(segments) == 0 {
				usage("no segments in %s", filepath.Join(dir, "ledger"))
			}
		} else {
			segments = args
		}
	} else {
		segments = args
	}
	if len(checkpoints) > 0 && (*vkey == "" || len(segments) == 0) {
		usage("checking checkpoints needs a key (-vkey) and the ledger (DATA_DIR or SEGMENT files)")
	}
	if len(checkpoints) == 0 && len(bundles) == 0 {
		usage("nothing to check")
	}

	var trusted note.Verifier
	var trustedText string
	if *vkey != "" {
		trusted, trustedText = loadVerifier(*vkey)
	}
	var tree *ledgerTree
	if len(segments) > 0 {
		t, err := readLedger(segments)
		if err != nil {
			fail("ledger", strings.Join(segments, ","), "%v", err)
			os.Exit(1)
		}
		tree = t
		pass("ledger", fmt.Sprintf("%d segments", len(segments)), "%d records, leaf i = tlog.RecordHash(line i without its MAC)", t.records)
		if t.chainBreak != "" {
			fail("chain", fmt.Sprintf("%d segments", len(segments)), "%s", t.chainBreak)
		} else {
			pass("chain", fmt.Sprintf("%d segments", len(segments)), "each prev_hash is the previous record's leaf hash")
		}
	}

	var good []verified
	for _, c := range checkpoints {
		if v, ok := checkCheckpoint(c, trusted, tree, *proofs); ok {
			good = append(good, v)
		}
	}
	sort.SliceStable(good, func(i, j int) bool { return good[i].cp.size < good[j].cp.size })
	for i := 1; i < len(good); i++ {
		checkConsistency(good[i-1], good[i], tree)
	}
	for _, b := range bundles {
		checkBundle(b, trusted, trustedText, tree)
	}

	checks := "all checks passed"
	if failures > 0 {
		checks = fmt.Sprintf("%d checks FAILED", failures)
	}
	fmt.Printf("checkpoint-verify: %d checkpoints, %d bundles: %s\n", len(checkpoints), len(bundles), checks)
	if failures > 0 {
		os.Exit(1)
	}
}
