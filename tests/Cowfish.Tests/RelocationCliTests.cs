using Cowfish.Tests.Support;
using Xunit;

namespace Cowfish.Tests;

/// <summary><c>cowfish relocate</c> and <c>cowfish defrag</c> on a real pool file.</summary>
public sealed class RelocationCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cowfish-reloc-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Ok(params string[] args)
    {
        var (code, o, e) = CliHarness.Run(args);
        Assert.True(code == 0, $"cowfish {string.Join(' ', args)} exited {code}: {e}");
        return o;
    }

    [Fact]
    public void RelocateShrinksThePoolFileAndKeepsEveryByte()
    {
        string pool = Path.Combine(_dir, "p.cow");
        Ok("mkfs", pool);
        Ok("volume", "create", pool, "v");
        var rng = new Random(5);
        var big = new byte[24 << 20];
        var keep = new byte[3 << 20];
        rng.NextBytes(big);
        rng.NextBytes(keep);
        File.WriteAllBytes(Path.Combine(_dir, "big"), big);
        File.WriteAllBytes(Path.Combine(_dir, "keep"), keep);
        Ok("import", pool, Path.Combine(_dir, "big"), "v/big");
        Ok("import", pool, Path.Combine(_dir, "keep"), "v/keep");
        Ok("cp", pool, "v/keep", "v/keep2");
        Ok("snapshot", pool, "v", "s");
        Ok("rm", pool, "v/big");
        Ok("volume", "delete", pool, "s");
        long before = new FileInfo(pool).Length;

        string said = Ok("relocate", pool, "--shrink");
        Assert.Contains("shrunk", said);
        long after = new FileInfo(pool).Length;
        Assert.True(after < before / 3, $"pool file {after} bytes, was {before}");
        Ok("check", pool);
        Ok("export", pool, "v/keep", Path.Combine(_dir, "out1"));
        Ok("export", pool, "v/keep2", Path.Combine(_dir, "out2"));
        Assert.Equal(keep, File.ReadAllBytes(Path.Combine(_dir, "out1")));
        Assert.Equal(keep, File.ReadAllBytes(Path.Combine(_dir, "out2")));

        // Already compact: nothing to do, still clean.
        Assert.Contains("nothing to move", Ok("relocate", pool, "--shrink"));
        var (code, _, err) = CliHarness.Run("relocate", pool, "--target-size", "64K");
        Assert.Equal(4, code);
        Assert.Contains("do not fit", err);
        Ok("check", pool);
    }

    [Fact]
    public void DefragReportsWhatItDid()
    {
        string pool = Path.Combine(_dir, "d.cow");
        Ok("mkfs", pool);
        Ok("volume", "create", pool, "v");
        var data = new byte[1 << 20];
        new Random(2).NextBytes(data);
        File.WriteAllBytes(Path.Combine(_dir, "f"), data);
        Ok("import", pool, Path.Combine(_dir, "f"), "v/f");
        Assert.Contains("already contiguous (1 fragment)", Ok("defrag", pool, "v/f"));
        Ok("cp", pool, "v/f", "v/g");
        Assert.Contains("already contiguous (1 fragment)", Ok("defrag", pool, "v/g"));
        Ok("check", pool);
    }

    /// <summary>A fragmented file shared with a clone and a snapshot: defrag moves the shared extents, the JSON says so, and every copy keeps its bytes.</summary>
    [Fact]
    public void DefragOfASharedFileKeepsItShared()
    {
        string pool = Path.Combine(_dir, "s.cow");
        Dictionary<string, byte[]> model;
        using (var fs = Files.FileSystem.Create(pool))
            model = DefragTests.SharedFragmented(fs, new Random(6), chunks: 32, overwrites: 2);
        string before = Ok("du", pool, "--json");
        var json = System.Text.Json.JsonDocument.Parse(Ok("defrag", pool, "v/a", "--json")).RootElement;
        Assert.True(json.GetProperty("fragments_before").GetInt32() > 20, json.ToString());
        Assert.True(json.GetProperty("fragments_after").GetInt32() <= 7, json.ToString());
        Assert.True(json.GetProperty("shared_bytes_moved").GetInt64() >= 28L * 65536, json.ToString());
        // The clone follows the moved extents; defragmenting it in turn moves them again, for both.
        Assert.Contains("still shared", Ok("defrag", pool, "v/c"));
        Assert.Equal(before, Ok("du", pool, "--json"));
        Ok("check", pool);
        foreach (var (p, bytes) in model)
        {
            string o = Path.Combine(_dir, "out");
            File.Delete(o);
            Ok("export", pool, p, o);
            Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(o)), $"{p} differs after defrag");
        }
    }

    [Fact]
    public void CompactGathersFreeSpaceAndKeepsTheSize()
    {
        string pool = Path.Combine(_dir, "c.cow");
        Dictionary<string, byte[]> model;
        using (var fs = Files.FileSystem.Create(pool))
            model = CompactionTests.Scattered(fs, new Random(3));
        long size = new FileInfo(pool).Length;
        string du = Ok("du", pool, "--json");
        var json = System.Text.Json.JsonDocument.Parse(Ok("relocate", pool, "--compact", "--json")).RootElement;
        Assert.True(json.GetProperty("regions_emptied").GetInt32() > 0, json.ToString());
        Assert.True(json.GetProperty("longest_free_run_after").GetInt64() > 2 * json.GetProperty("longest_free_run_before").GetInt64(), json.ToString());
        Assert.Equal(size, new FileInfo(pool).Length);
        Assert.Equal(du, Ok("du", pool, "--json"));
        Ok("check", pool);
        foreach (var p in new[] { "v/f0", "v/c0", "s/f5" })
        {
            string o = Path.Combine(_dir, "out");
            File.Delete(o);
            Ok("export", pool, p, o);
            Assert.True(model[p].AsSpan().SequenceEqual(File.ReadAllBytes(o)), $"{p} differs after compaction");
        }
        var (code, _, err) = CliHarness.Run("relocate", pool, "--compact", "--shrink");
        Assert.Equal(2, code);
        Assert.Contains("--compact keeps the pool's size", err);
    }
}
