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
        Assert.Contains("left alone", Ok("defrag", pool, "v/f"));
        Ok("check", pool);
    }
}
