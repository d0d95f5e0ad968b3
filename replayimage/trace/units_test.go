package trace

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0B", 0, false},
		{"147.9MB", 147_900_000, false},
		{"4.06GB", 4_060_000_000, false}, // decimal, not 1024³
		{"16.19GB", 16_190_000_000, false},
		{"671.7kB", 671_700, false},
		{"2KB", 2000, false},
		{"1.5TB", 1_500_000_000_000, false},
		{"1KiB", 1024, false},
		{"2MiB", 2 << 20, false},
		{"1.5GiB", 3 << 29, false},
		{" 12 MB ", 12_000_000, false},
		{"12XB", 0, true},
		{"12mb", 0, true},
		{"12", 0, true},
		{"MB", 0, true},
		{"--", 0, true},
		{"-1MB", 0, true},
		{"1e3MB", 0, true},
		{"12.MB", 0, true},
		{".5MB", 0, true},
		{"InfMB", 0, true},
		{"99999999999TB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseUsage(t *testing.T) {
	tests := []struct {
		in          string
		used, limit int64
		wantErr     bool
	}{
		{"147.9MB / 16.19GB", 147_900_000, 16_190_000_000, false},
		{"0B / 0B", 0, 0, false},
		{"147.9MB", 0, 0, true},
		{"147.9MB / ", 0, 0, true},
		{"1ZB / 2GB", 0, 0, true},
	}
	for _, tt := range tests {
		u, l, err := ParseUsage(tt.in)
		if (err != nil) != tt.wantErr || u != tt.used || l != tt.limit {
			t.Errorf("ParseUsage(%q) = %d, %d, %v; want %d, %d, error %v", tt.in, u, l, err, tt.used, tt.limit, tt.wantErr)
		}
	}
}

func TestParsePercent(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"88.56%", 88.56, false},
		{"0.00%", 0, false},
		{"251.7%", 251.7, false},
		{"88.56", 0, true},
		{"--", 0, true},
		{"-1%", 0, true},
		{"NaN%", 0, true},
	}
	for _, tt := range tests {
		got, err := ParsePercent(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParsePercent(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
