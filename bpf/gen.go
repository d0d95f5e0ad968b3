package bpf

// Rebuild the objects with `make generate` (needs clang-14). One struct_ops
// map per object: see README.md. growthcheck is the test-only syscall
// program that runs growth.bpf.h for TestGrowthSignalMatchesGo.
//go:generate go tool bpf2go -cc clang-14 -no-global-types -type agentcg_counters -target bpfel -go-package bpf high high.bpf.c -- -fms-extensions -Wno-microsoft-anon-tag -I./headers
//go:generate go tool bpf2go -cc clang-14 -no-global-types -target bpfel -go-package bpf low low.bpf.c -- -fms-extensions -Wno-microsoft-anon-tag -I./headers
//go:generate go tool bpf2go -cc clang-14 -no-global-types -type growth_check -target bpfel -go-package bpf growthcheck growthcheck.bpf.c -- -fms-extensions -Wno-microsoft-anon-tag -I./headers
