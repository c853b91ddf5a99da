using System.Diagnostics;
using System.Text.Json;
using Cowfish.Cli;
using Cowfish.Tests.Support;
using Xunit;

namespace Cowfish.Tests;

/// <summary>The cowfish command, run in-process for speed and once as a real process.</summary>
public sealed class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cowfish-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    [Fact]
    public void MkfsInfoAndCheckWork()
    {
        string pool = Path.Combine(_dir, "p.pool");
        var r = Run("mkfs", pool);
        Assert.Equal(0, r.Code);
        Assert.Contains("created pool", r.Out);
        Assert.Equal(0, Run("tree", "create", pool).Code);
        Assert.Equal(0, Run("tree", "put", pool, "1", "alpha", "one").Code);
        Assert.Equal(0, Run("tree", "put", pool, "1", "beta", "two").Code);
        var clone = Run("tree", "clone", pool, "1");
        Assert.Equal("2", clone.Out.Trim());
        Assert.Equal(0, Run("tree", "del", pool, "2", "alpha").Code);
        Assert.Equal("one", Run("tree", "get", pool, "1", "alpha").Out.Trim());
        Assert.Equal(3, Run("tree", "get", pool, "2", "alpha").Code);

        var info = Run("info", pool, "--json");
        Assert.Equal(0, info.Code);
        using (var doc = JsonDocument.Parse(info.Out))
        {
            Assert.Equal(1, doc.RootElement.GetProperty("format_version").GetInt32());
            Assert.Equal(2, doc.RootElement.GetProperty("trees").GetInt32());
            Assert.True(doc.RootElement.GetProperty("used_blocks").GetInt64() > 0);
            Assert.Equal(doc.RootElement.GetProperty("total_blocks").GetInt64(),
                doc.RootElement.GetProperty("used_blocks").GetInt64() + doc.RootElement.GetProperty("free_blocks").GetInt64());
        }
        Assert.Contains("format version: 1", Run("info", pool).Out);

        var check = Run("check", pool, "--json");
        Assert.Equal(0, check.Code);
        using (var doc = JsonDocument.Parse(check.Out))
        {
            Assert.True(doc.RootElement.GetProperty("clean").GetBoolean());
            Assert.Equal(0, doc.RootElement.GetProperty("faults").GetArrayLength());
        }
        Assert.StartsWith("clean:", Run("check", pool).Out.Trim());
    }

    [Fact]
    public void CheckListsFaultsAndExitsOne()
    {
        string pool = Path.Combine(_dir, "bad.pool");
        Assert.Equal(0, Run("mkfs", pool).Code);
        Run("tree", "create", pool);
        for (int i = 0; i < 300; i++) Run("tree", "put", pool, "1", $"key{i:D4}", new string('x', 50));
        // Damage a tree leaf that the newest state uses: flip a byte in every node-magic block but the bookkeeping roots.
        var bytes = File.ReadAllBytes(pool);
        int damaged = 0;
        for (int b = 2; b < bytes.Length / 4096 && damaged < 3; b++)
        {
            if (BitConverter.ToUInt32(bytes, b * 4096) == 0x444E4643 && bytes[b * 4096 + 24] == 4 && bytes[b * 4096 + 25] == 0)
            {
                bytes[b * 4096 + 100] ^= 0xFF;
                damaged++;
            }
        }
        Assert.True(damaged > 0);
        File.WriteAllBytes(pool, bytes);
        var r = Run("check", pool);
        Assert.Equal(1, r.Code);
        Assert.Contains("fault:", r.Out);
        Assert.Contains("checksum", r.Out);
        var j = Run("check", pool, "--json");
        Assert.Equal(1, j.Code);
        using var doc = JsonDocument.Parse(j.Out);
        Assert.False(doc.RootElement.GetProperty("clean").GetBoolean());
        Assert.True(doc.RootElement.GetProperty("faults").GetArrayLength() > 0);
    }

    [Fact]
    public void BadInputGivesOneLineAndANonZeroCode()
    {
        string missing = Path.Combine(_dir, "missing.pool");
        var r = Run("info", missing);
        Assert.Equal(4, r.Code);
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.Contains("does not exist", r.Err);

        string garbage = Path.Combine(_dir, "garbage");
        File.WriteAllText(garbage, "this is not a pool at all, just text" + new string('z', 9000));
        r = Run("check", garbage);
        Assert.Equal(4, r.Code);
        Assert.Contains("not a Cowfish pool", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));

        Assert.Equal(2, Run("frobnicate").Code);
        Assert.Equal(2, Run("info").Code);
        Assert.Equal(2, Run("info", "a", "b").Code);
        Assert.Equal(2, Run("check", garbage, "--bogus").Code);
        string pool = Path.Combine(_dir, "p.pool");
        Assert.Equal(0, Run("mkfs", pool).Code);
        r = Run("mkfs", pool);
        Assert.Equal(2, r.Code);
        Assert.Contains("already exists", r.Err);
        Assert.Equal(3, Run("tree", "put", pool, "42", "k", "v").Code);
        Assert.Equal(2, Run("tree", "put", pool, "notanumber", "k", "v").Code);
    }

    [Fact]
    public void HelpWorksEverywhere()
    {
        var r = Run("--help");
        Assert.Equal(0, r.Code);
        foreach (var cmd in new[] { "mkfs", "info", "check", "tree" })
        {
            Assert.Contains(cmd, r.Out);
            var h = Run(cmd, "--help");
            Assert.Equal(0, h.Code);
            Assert.Contains($"usage: cowfish {cmd}", h.Out);
        }
        Assert.Equal(2, Run().Code);
    }

    [Fact]
    public void SizesParseWithSuffixes()
    {
        Assert.Equal(4096, Args.ParseSize("4K"));
        Assert.Equal(1L << 30, Args.ParseSize("1G"));
        Assert.Equal(1L << 30, Args.ParseSize("1GiB"));
        Assert.Equal(123, Args.ParseSize("123"));
        Assert.Throws<UsageException>(() => Args.ParseSize("12Q"));
        Assert.Throws<UsageException>(() => Args.ParseSize("-1"));
    }

    [Fact]
    public void TheRealProcessGivesTheSameExitCodes()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "Cowfish.Cli.dll");
        Assert.True(File.Exists(dll), dll);
        string pool = Path.Combine(_dir, "proc.pool");
        (int, string, string) Exec(params string[] a)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add(dll);
            foreach (var x in a) psi.ArgumentList.Add(x);
            using var p = Process.Start(psi)!;
            string o = p.StandardOutput.ReadToEnd(), e = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, o, e);
        }
        Assert.Equal(0, Exec("mkfs", pool).Item1);
        var (code, o, _) = Exec("check", pool);
        Assert.Equal(0, code);
        Assert.Contains("clean", o);
        var (c2, _, e2) = Exec("check", Path.Combine(_dir, "nope.pool"));
        Assert.Equal(4, c2);
        Assert.Contains("does not exist", e2);
    }
}
