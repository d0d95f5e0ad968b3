// Command dist assembles the release artefacts from `make build` output:
// it runs every binary with --version (each must print the version), then
// writes a tarball of the binaries and install files, a .deb built with
// nfpm (binaries in /usr/bin, the systemd unit, /etc/agentcg/config.yaml as
// a conffile, OCI hooks.d files, licences), copies the image tars, and
// writes SHA256SUMS over everything.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// opts are the inputs, relative to the repository root.
type opts struct {
	root, bin, out, version, arch, hooksd, images string
	binaries                                      []string
	debOnly                                       bool
}

// nodeBinaries go into the .deb; the tarball carries every binary.
var nodeBinaries = []string{"agentcg", "agentcg-nri", "agentcg-hook", "agentcg-runc"}

func main() {
	var o opts
	flag.StringVar(&o.root, "root", ".", "repository root")
	flag.StringVar(&o.bin, "bin", "bin", "folder of built binaries")
	flag.StringVar(&o.out, "out", "dist", "output folder (emptied first)")
	flag.StringVar(&o.version, "version", "", "version (git describe), required")
	flag.StringVar(&o.arch, "arch", "amd64", "GOARCH of the binaries")
	flag.StringVar(&o.hooksd, "hooksd", "hook/hooks.d", "folder of OCI hooks.d JSON files (hook.path is set to /usr/bin/agentcg-hook)")
	flag.BoolVar(&o.debOnly, "deb-only", false, "write only the .deb (no --version check, tarball, images or sums): what make vmtest installs in the guest")
	flag.StringVar(&o.images, "images", "build/images", "folder of image tars to ship (\"\" for none)")
	bins := flag.String("binaries", "agentcg,agentcg-nri,agentcg-hook,agentcg-runc,agentcg-replay,agentcg-image", "binaries to check and ship")
	flag.Parse()
	o.binaries = strings.Split(*bins, ",")
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}

func run(o opts) error {
	if o.version == "" {
		return errors.New("--version is required")
	}
	// Paths are relative to --root unless absolute.
	for _, p := range []*string{&o.out, &o.bin, &o.hooksd, &o.images} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(o.root, *p)
		}
	}
	if !o.debOnly {
		if err := checkVersions(o); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(o.out); err != nil {
		return err
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	mtime := commitTime(o.root)
	extra, err := installFiles(o)
	if err != nil {
		return err
	}
	if o.debOnly {
		deb, err := writeDeb(o, extra, mtime)
		os.RemoveAll(filepath.Join(o.out, ".hooks.d"))
		fmt.Println("dist:", deb)
		return err
	}
	base := fmt.Sprintf("agentcg_%s_linux_%s", o.version, o.arch)
	if err := writeTarball(o, extra, filepath.Join(o.out, base+".tar.gz"), base, mtime); err != nil {
		return err
	}
	deb, err := writeDeb(o, extra, mtime)
	if err != nil {
		return err
	}
	fmt.Println("dist:", deb)
	if o.images != "" {
		imgs, _ := filepath.Glob(filepath.Join(o.images, "*.tar"))
		if len(imgs) == 0 {
			return fmt.Errorf("no image tars in %s: run make images", o.images)
		}
		for _, img := range imgs {
			if err := copyFile(img, filepath.Join(o.out, filepath.Base(img))); err != nil {
				return err
			}
		}
	}
	os.RemoveAll(filepath.Join(o.out, ".hooks.d"))
	return writeSums(o.out)
}

// checkVersions runs each binary with --version (it must print the version)
// and --help (it must print a usage). A non-zero exit with that output is
// noted, not fatal: agentcg-runc prints its own version, then fails to
// find runc on a build machine that has none.
func checkVersions(o opts) error {
	var bad []string
	for _, b := range o.binaries {
		p := filepath.Join(o.bin, b)
		out, err := exec.Command(p, "--version").CombinedOutput()
		if !strings.Contains(string(out), o.version) {
			bad = append(bad, fmt.Sprintf("%s --version: %v: %q (want it to name %s)", b, err, strings.TrimSpace(string(out)), o.version))
			continue
		}
		note := ""
		if err != nil {
			note = fmt.Sprintf(" (then %v: %s)", err, lastLine(string(out)))
		}
		help, herr := exec.Command(p, "--help").CombinedOutput()
		if !strings.Contains(string(help), "Usage") {
			bad = append(bad, fmt.Sprintf("%s --help: %v: %q (want a usage)", b, herr, firstLine(string(help))))
			continue
		}
		fmt.Printf("dist: %s --version: %s%s\n", b, firstLine(string(out)), note)
	}
	if len(bad) > 0 {
		return fmt.Errorf("binaries without a working --version/--help:\n  %s", strings.Join(bad, "\n  "))
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// commitTime stamps archive entries with the commit's time, so the same
// commit gives the same tarball.
func commitTime(root string) time.Time {
	out, err := exec.Command("git", "-C", root, "log", "-1", "--format=%ct").Output()
	if err == nil {
		var sec int64
		if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &sec); err == nil {
			return time.Unix(sec, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

// installFiles are what both the tarball and the .deb carry besides binaries:
// source path (relative to root) -> path in the tarball.
func installFiles(o opts) ([][2]string, error) {
	// Source paths are absolute or relative to the working directory.
	list := [][2]string{
		{"LICENSE", "LICENSE"},
		{"LICENSES/Apache-2.0.txt", "LICENSES/Apache-2.0.txt"},
		{"LICENSES/GPL-2.0-only.txt", "LICENSES/GPL-2.0-only.txt"},
		{"LICENSES/BSD-2-Clause.txt", "LICENSES/BSD-2-Clause.txt"},
		{"README.md", "README.md"},
		{"deploy/config/config.yaml", "etc/agentcg/config.yaml"},
		{"deploy/manifests/agentcg.yaml", "deploy/agentcg.yaml"},
	}
	for i := range list {
		list[i][0] = filepath.Join(o.root, list[i][0])
	}
	for _, name := range []string{"agentcg-nri.service", "agentcg-hook-preload.service"} {
		unit := filepath.Join(o.root, "deploy/systemd", name)
		if !exists(unit) {
			return nil, fmt.Errorf("systemd unit %s is missing", unit)
		}
		list = append(list, [2]string{unit, "systemd/" + name})
	}
	if o.hooksd != "" {
		hooks, _ := filepath.Glob(filepath.Join(o.hooksd, "*.json"))
		if len(hooks) == 0 {
			return nil, fmt.Errorf("--hooksd %s: no JSON files", o.hooksd)
		}
		dir := filepath.Join(o.out, ".hooks.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		for _, h := range hooks {
			dst := filepath.Join(dir, filepath.Base(h))
			if err := packagedHook(h, dst, "/usr/bin/agentcg-hook"); err != nil {
				return nil, err
			}
			list = append(list, [2]string{dst, "hooks.d/" + filepath.Base(h)})
		}
	}
	return list, nil
}

// packagedHook copies an OCI hooks.d file with hook.path set to where the
// package installs agentcg-hook; everything else (args, timeout, when) stays.
func packagedHook(src, dst, path string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	h, ok := m["hook"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: no hook object", src)
	}
	h["path"] = path
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(dst, append(out, '\n'), 0o644)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func writeTarball(o opts, extra [][2]string, file, prefix string, mtime time.Time) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	zw.ModTime = mtime
	tw := tar.NewWriter(zw)
	add := func(src, dst string, mode int64) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: prefix + "/" + dst, Mode: mode, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX, Uname: "root", Gname: "root"}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		_, err = tw.Write(data)
		return err
	}
	for _, b := range o.binaries {
		if err := add(filepath.Join(o.bin, b), "bin/"+b, 0o755); err != nil {
			return err
		}
	}
	for _, e := range extra {
		if err := add(e[0], e[1], 0o644); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}

var (
	debBad  = regexp.MustCompile(`[^A-Za-z0-9.+~]`)
	release = regexp.MustCompile(`^[0-9]+\.[0-9]+`)
)

// debVersion turns git describe output into a Debian version: v1.2.3 stays
// 1.2.3; 1.2.3-4-gabc becomes 1.2.3+4.gabc; an untagged abc123-dirty
// becomes 0.0.0~abc123.dirty (sorts before any release).
func debVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if !release.MatchString(v) {
		return "0.0.0~" + debBad.ReplaceAllString(v, ".")
	}
	if i := strings.IndexByte(v, '-'); i >= 0 {
		return v[:i] + "+" + debBad.ReplaceAllString(v[i+1:], ".")
	}
	return v
}

func writeDeb(o opts, extra [][2]string, mtime time.Time) (string, error) {
	contents := files.Contents{}
	for _, b := range nodeBinaries {
		if !slices.Contains(o.binaries, b) {
			return "", fmt.Errorf("the .deb needs %s", b)
		}
		contents = append(contents, &files.Content{Source: filepath.Join(o.bin, b), Destination: "/usr/bin/" + b, FileInfo: &files.ContentFileInfo{Mode: 0o755}})
	}
	for _, e := range extra {
		c := &files.Content{Source: e[0], FileInfo: &files.ContentFileInfo{Mode: 0o644}}
		switch dst := e[1]; {
		case dst == "etc/agentcg/config.yaml":
			c.Destination, c.Type = "/etc/agentcg/config.yaml", files.TypeConfigNoReplace
		case strings.HasPrefix(dst, "systemd/"):
			c.Destination = "/lib/systemd/system/" + filepath.Base(dst)
		case strings.HasPrefix(dst, "hooks.d/"):
			// podman and CRI-O read hooks.d here unless configured otherwise.
			c.Destination = "/usr/share/containers/oci/hooks.d/" + filepath.Base(dst)
		case dst == "LICENSE":
			c.Destination = "/usr/share/doc/agentcg/copyright"
		default:
			c.Destination = "/usr/share/doc/agentcg/" + dst
		}
		contents = append(contents, c)
	}
	info := &nfpm.Info{
		Name:          "agentcg",
		Arch:          o.arch,
		Platform:      "linux",
		Version:       debVersion(o.version),
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "agentcg authors <agentcg@users.noreply.github.com>",
		Description:   "memcg priority policies for AI-agent containers\n agentcg-nri (containerd NRI plugin), agentcg-hook and agentcg-runc (OCI hook\n and runc wrapper for Docker, podman, CRI-O) and the agentcg CLI (configure,\n doctor, status). BPF mode needs the memcg BPF struct_ops kernel series.",
		Vendor:        "agentcg",
		Homepage:      "https://github.com/agentcg/agentcg",
		License:       "Apache-2.0 AND (GPL-2.0-only OR BSD-2-Clause)",
		MTime:         mtime,
		Overridables: nfpm.Overridables{
			Recommends: []string{"containerd (>= 1.7) | docker.io (>= 24)"},
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: filepath.Join(o.root, "deploy/deb/postinst.sh"),
				PreRemove:   filepath.Join(o.root, "deploy/deb/prerm.sh"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("deb: %w", err)
	}
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	file := filepath.Join(o.out, pkgr.ConventionalFileName(info))
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("deb: %w", err)
	}
	return file, f.Close()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeSums writes SHA256SUMS (sha256sum -c format) over the folder's files.
func writeSums(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, e := range ents {
		if e.IsDir() || e.Name() == "SHA256SUMS" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), e.Name())
	}
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(b.String()), 0o644)
}
