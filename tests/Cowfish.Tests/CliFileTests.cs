using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Cowfish.Cli;
using Cowfish.Tests.Support;
using Xunit;

namespace Cowfish.Tests;

/// <summary>
/// The file-system verbs of the cowfish command (volume, snapshot, import/export, write, cat, ls, stat,
/// mkdir, rm, mv, cp, clone-range, dedupe, du, truncate, punch), run in-process and once as a real
/// process. Every test that changes a pool ends with a clean <c>cowfish check</c>.
/// </summary>
public sealed class CliFileTests : IDisposable
{
    private const int K = 1024, M = 1024 * 1024;
    private readonly string _dir = Directory.CreateTempSubdirectory("cowfish-clifs-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    /// <summary>Runs with a stdin stream and a binary stdout, as Program.cs does.</summary>
    private static (int Code, byte[] Out, string Err) RunBinary(byte[]? stdin, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        using var input = new MemoryStream(stdin ?? []);
        using var output = new MemoryStream();
        int code = Cli.Cli.Run(args, new Io(o, e, input, output));
        Assert.Equal("", o.ToString());
        return (code, output.ToArray(), e.ToString());
    }

    private static string Ok(params string[] args)
    {
        var r = Run(args);
        Assert.True(r.Code == 0, $"cowfish {string.Join(' ', args)} exited {r.Code}: {r.Err}");
        Assert.Equal("", r.Err);
        return r.Out;
    }

    private static void AssertCheckClean(string pool)
    {
        var r = Run("check", pool);
        Assert.True(r.Code == 0, $"check failed: {r.Out}{r.Err}");
        Assert.StartsWith("clean:", r.Out.Trim());
    }

    /// <summary>An error is exactly one line on stderr, with the command's name in it.</summary>
    private static void AssertFails(int code, string contains, params string[] args)
    {
        var r = Run(args);
        Assert.True(r.Code == code, $"cowfish {string.Join(' ', args)} exited {r.Code}, expected {code}: {r.Err}");
        Assert.Contains(contains, r.Err);
        Assert.StartsWith($"cowfish {args[0]}:", r.Err);
        // Usage errors add the usage line; everything else is one line.
        Assert.Equal(code == ExitCodes.Usage ? 2 : 1, r.Err.TrimEnd().Split('\n').Length);
    }

    private string NewPool(params string[] volumes)
    {
        string pool = Path.Combine(_dir, $"p{Guid.NewGuid():N}.pool");
        Ok("mkfs", pool);
        foreach (var v in volumes) Ok("volume", "create", pool, v);
        return pool;
    }

    private static JsonElement Json(string text)
    {
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    private static ulong UsedBlocks(string pool) => Json(Ok("info", pool, "--json")).GetProperty("used_blocks").GetUInt64();

    private static (ulong Total, ulong Exclusive, ulong Shared) Du(string pool, string path)
    {
        var j = Json(Ok("du", pool, path, "--json"));
        return (j.GetProperty("total").GetUInt64(), j.GetProperty("exclusive").GetUInt64(), j.GetProperty("shared").GetUInt64());
    }

    private static byte[] Cat(string pool, string path)
    {
        var r = RunBinary(null, "cat", pool, path);
        Assert.True(r.Code == 0, r.Err);
        return r.Out;
    }

    private static long Summary(string output, string field)
    {
        var m = Regex.Match(output, $@"\b{field} (\d+)");
        Assert.True(m.Success, $"no '{field} N' in: {output}");
        return long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>Bytes the host file system has allocated to a file (stat %b counts 512-byte units).</summary>
    private static long AllocatedBytes(string path)
    {
        var psi = new ProcessStartInfo("stat") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add("%b");
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return long.Parse(o.Trim(), CultureInfo.InvariantCulture) * 512;
    }

    /// <summary>A host file of <paramref name="size"/> bytes that holds <paramref name="pieces"/> and holes everywhere else.</summary>
    private string SparseHostFile(string name, long size, params (long Offset, byte[] Data)[] pieces)
    {
        string path = Path.Combine(_dir, name);
        using var h = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite);
        foreach (var (off, data) in pieces) RandomAccess.Write(h, data, off);
        RandomAccess.SetLength(h, size);
        return path;
    }

    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void VolumesAreCreatedListedRenamedSnapshottedAndDeletedWithTheirSpaceGivenBack()
    {
        string pool = NewPool("alpha");
        Ok("volume", "create", pool, "beta");
        var list = Json(Ok("volume", "list", pool, "--json"));
        Assert.Equal(["alpha", "beta"], list.EnumerateArray().Select(v => v.GetProperty("name").GetString()!).ToArray());
        Assert.Contains("alpha", Ok("volume", "list", pool));

        Ok("volume", "rename", pool, "beta", "gamma");
        Ok("snapshot", pool, "alpha", "alpha-ro", "--readonly");
        Ok("snapshot", pool, "alpha", "alpha-rw");
        list = Json(Ok("volume", "list", pool, "--json"));
        var byName = list.EnumerateArray().ToDictionary(v => v.GetProperty("name").GetString()!);
        Assert.Equal(["alpha", "alpha-ro", "alpha-rw", "gamma"], byName.Keys.Order(StringComparer.Ordinal).ToArray());
        Assert.True(byName["alpha-ro"].GetProperty("read_only").GetBoolean());
        Assert.False(byName["alpha-rw"].GetProperty("read_only").GetBoolean());
        Assert.Equal("alpha", byName["alpha-ro"].GetProperty("origin").GetString());
        Assert.Equal(JsonValueKind.Null, byName["alpha"].GetProperty("origin").ValueKind);

        // 2 MiB in a volume of its own: deleting it must give the blocks back before the command exits.
        string host = Path.Combine(_dir, "data.bin");
        File.WriteAllBytes(host, RandomBytes(2 * M, 1));
        ulong before = UsedBlocks(pool);
        Ok("import", pool, host, "gamma/data");
        ulong full = UsedBlocks(pool);
        Assert.True(full >= before + 512, $"{before} -> {full}");
        Assert.Contains("freed", Ok("volume", "delete", pool, "gamma"));
        ulong after = UsedBlocks(pool);
        Assert.True(after <= before + 4, $"deleting the volume left {after} blocks used; {before} before the import");
        Assert.DoesNotContain("gamma", Ok("volume", "list", pool));

        AssertFails(ExitCodes.NotFound, "does not exist", "volume", "delete", pool, "gamma");
        AssertFails(ExitCodes.NotFound, "does not exist", "snapshot", pool, "nope", "x");
        AssertFails(ExitCodes.Error, "already exists", "volume", "create", pool, "alpha");
        AssertFails(ExitCodes.Usage, "unknown volume verb", "volume", "frob", pool);
        AssertCheckClean(pool);
    }

    [Fact]
    public void SparseImportThenExportIsByteIdenticalAndKeepsTheHoles()
    {
        string pool = NewPool("vol");
        long size = 16L * M + 123;
        byte[] a = RandomBytes(64 * K, 2), b = RandomBytes(70_000, 3), c = RandomBytes(5000, 4);
        string host = SparseHostFile("sparse.bin", size, (0, a), (5L * M + 100, b), (12L * M, c));
        Assert.True(AllocatedBytes(host) < 1 * M, "the test file system should keep holes");

        string summary = Ok("import", pool, host, "vol/sparse");
        long written = Summary(summary, "wrote");
        Assert.True(written < 200 * K, summary);
        Assert.Equal(size, written + Summary(summary, "skipped"));

        var stat = Json(Ok("stat", pool, "vol/sparse", "--json"));
        Assert.Equal(size, stat.GetProperty("size").GetInt64());
        Assert.Equal("file", stat.GetProperty("type").GetString());
        Assert.True(stat.GetProperty("data_bytes").GetInt64() < 200 * K);
        Assert.True(Du(pool, "vol/sparse").Total < 200 * K);

        string exported = Path.Combine(_dir, "out.bin");
        summary = Ok("export", pool, "vol/sparse", exported);
        Assert.True(Summary(summary, "wrote") < 200 * K, summary);
        Assert.Equal(File.ReadAllBytes(host), File.ReadAllBytes(exported));
        Assert.True(AllocatedBytes(exported) < 1 * M, $"export allocated {AllocatedBytes(exported)} bytes of a {size}-byte file with ~140 KiB of data");

        // Into an existing directory, both ways: the file keeps its name.
        Ok("mkdir", pool, "vol/in");
        Ok("import", pool, host, "vol/in");
        Assert.Equal((ulong)size, Json(Ok("stat", pool, "vol/in/sparse.bin", "--json")).GetProperty("size").GetUInt64());
        string outDir = Directory.CreateDirectory(Path.Combine(_dir, "outdir")).FullName;
        Ok("export", pool, "vol/in/sparse.bin", outDir);
        Assert.Equal(File.ReadAllBytes(host), File.ReadAllBytes(Path.Combine(outDir, "sparse.bin")));

        // An empty host file and a file that is all hole.
        string empty = SparseHostFile("empty.bin", 0);
        Ok("import", pool, empty, "vol/empty");
        Assert.Empty(Cat(pool, "vol/empty"));
        string hole = SparseHostFile("hole.bin", 3 * M);
        Assert.Equal(0, Summary(Ok("import", pool, hole, "vol/hole"), "wrote"));
        Assert.Equal(0UL, Du(pool, "vol/hole").Total);
        Assert.Equal(new byte[3 * M], Cat(pool, "vol/hole"));
        AssertCheckClean(pool);
    }

    [Fact]
    public void ReimportRewritesOnlyTheBlocksThatChangedSoSnapshotsKeepSharingTheRest()
    {
        string pool = NewPool("vol");
        string host = Path.Combine(_dir, "disk.img");
        var original = RandomBytes(1 * M, 5);
        File.WriteAllBytes(host, original);
        Ok("import", pool, host, "vol/disk.img");
        Ok("snapshot", pool, "vol", "before", "--readonly");

        // Unchanged: nothing is written, nothing becomes exclusive.
        Assert.Equal(0, Summary(Ok("import", pool, host, "vol/disk.img"), "wrote"));
        Assert.Equal(0UL, Du(pool, "vol/disk.img").Exclusive);

        // Three blocks change: one byte in block 10, and a write across the edge of blocks 100 and 101.
        var changed = (byte[])original.Clone();
        changed[10 * 4096 + 7] ^= 0xFF;
        for (int i = 101 * 4096 - 2; i < 101 * 4096 + 2; i++) changed[i] ^= 0x55;
        File.WriteAllBytes(host, changed);
        string summary = Ok("import", pool, host, "vol/disk.img");
        Assert.Equal(3 * 4096, Summary(summary, "wrote"));
        Assert.Equal(1 * M - 3 * 4096, Summary(summary, "skipped"));

        var (total, exclusive, shared) = Du(pool, "vol/disk.img");
        Assert.Equal((ulong)M, total);
        Assert.Equal(3UL * 4096, exclusive);
        Assert.Equal((ulong)M - 3 * 4096, shared);
        Assert.Equal(changed, Cat(pool, "vol/disk.img"));
        Assert.Equal(original, Cat(pool, "before/disk.img"));

        // Zeros where data was become a hole; a shorter host file shrinks the pool file.
        Array.Clear(changed, 200 * 4096, 8 * 4096);
        Array.Resize(ref changed, 900 * K + 5);
        File.WriteAllBytes(host, changed);
        summary = Ok("import", pool, host, "vol/disk.img");
        Assert.Equal(0, Summary(summary, "wrote"));
        Assert.Equal(8 * 4096, Summary(summary, "zeroed"));
        Assert.Equal(changed, Cat(pool, "vol/disk.img"));
        string exported = Path.Combine(_dir, "disk.out");
        Ok("export", pool, "vol/disk.img", exported);
        Assert.Equal(changed, File.ReadAllBytes(exported));
        AssertCheckClean(pool);
    }

    [Fact]
    public void CpIsAReflinkThatSharesEveryBlock()
    {
        string pool = NewPool("vol", "other");
        string host = Path.Combine(_dir, "a.bin");
        var data = RandomBytes(4 * M, 6);
        File.WriteAllBytes(host, data);
        Ok("import", pool, host, "vol/a");
        ulong before = UsedBlocks(pool);

        Ok("cp", pool, "vol/a", "vol/b");
        Ok("mkdir", pool, "vol/dir");
        Ok("cp", pool, "vol/a", "vol/dir");
        Ok("cp", pool, "vol/a", "other/a");
        ulong after = UsedBlocks(pool);
        Assert.True(after - before < 16, $"three clones of 1024 blocks used {after - before} new blocks");

        var (total, exclusive, shared) = Du(pool, "vol/b");
        Assert.Equal((ulong)data.Length, total);
        Assert.Equal(0UL, exclusive);
        Assert.Equal(total, shared);
        Assert.Equal(data, Cat(pool, "vol/dir/a"));
        Assert.Equal(data, Cat(pool, "other/a"));

        // Copies diverge only where written.
        Assert.Equal(0, RunBinary("changed"u8.ToArray(), "write", pool, "vol/b", "4K").Code);
        Assert.Equal(data, Cat(pool, "vol/a"));
        Assert.Equal("changed"u8.ToArray(), Cat(pool, "vol/b").AsSpan(4096, 7).ToArray());
        Assert.Equal(4096UL, Du(pool, "vol/b").Exclusive);

        // Whole-pool du lists every volume and the pool.
        var all = Json(Ok("du", pool, "--json"));
        Assert.Equal(JsonValueKind.Null, all.GetProperty("path").ValueKind);
        Assert.Equal(["other", "vol"], all.GetProperty("volumes").EnumerateArray().Select(v => v.GetProperty("path").GetString()!).ToArray());
        Assert.Equal(4UL * (ulong)data.Length, all.GetProperty("total").GetUInt64());
        string text = Ok("du", pool);
        Assert.Contains("Exclusive", text);
        Assert.Contains("MiB", text);
        Assert.Contains("(pool)", text);
        Assert.Contains($"{data.Length}", Ok("du", pool, "vol/a", "--bytes"));

        AssertFails(ExitCodes.Error, "not a regular file", "cp", pool, "vol/dir", "vol/c");
        AssertFails(ExitCodes.NotFound, "no such file", "cp", pool, "vol/missing", "vol/c");
        AssertCheckClean(pool);
    }

    [Fact]
    public void NamespaceVerbsCreateListStatMoveAndRemove()
    {
        string pool = NewPool("vol");
        Ok("mkdir", pool, "vol/a/b/c", "-p");
        Ok("mkdir", pool, "vol/a/b/c", "--parents");
        AssertFails(ExitCodes.NotFound, "no such file", "mkdir", pool, "vol/x/y");
        AssertFails(ExitCodes.Error, "exists", "mkdir", pool, "vol/a");
        Assert.Equal(0, RunBinary("hello"u8.ToArray(), "write", pool, "vol/a/f", "0").Code);

        var ls = Json(Ok("ls", pool, "vol/a", "--json"));
        var entries = ls.EnumerateArray().ToDictionary(e => e.GetProperty("name").GetString()!);
        Assert.Equal(["b", "f"], entries.Keys.ToArray());
        Assert.Equal("directory", entries["b"].GetProperty("type").GetString());
        Assert.Equal("file", entries["f"].GetProperty("type").GetString());
        Assert.Equal(5, entries["f"].GetProperty("size").GetInt64());
        Assert.True(entries["f"].GetProperty("inode").GetUInt64() > 1);
        string text = Ok("ls", pool, "vol/a");
        Assert.Contains("drwxr-xr-x", text);
        Assert.Contains("-rw-r--r--", text);
        Assert.Single(Json(Ok("ls", pool, "vol/a/f", "--json")).EnumerateArray());
        Assert.Single(Json(Ok("ls", pool, "vol", "--json")).EnumerateArray());

        var st = Json(Ok("stat", pool, "vol/a/f", "--json"));
        Assert.Equal(5, st.GetProperty("size").GetInt64());
        Assert.Equal(1, st.GetProperty("links").GetInt32());
        Assert.Equal(entries["f"].GetProperty("inode").GetUInt64(), st.GetProperty("inode").GetUInt64());
        Assert.Contains("type:         directory", Ok("stat", pool, "vol/a/b"));

        Ok("mv", pool, "vol/a/f", "vol/a/b");
        Assert.Equal("hello"u8.ToArray(), Cat(pool, "vol/a/b/f"));
        Ok("mv", pool, "vol/a/b/f", "vol/g");
        Assert.Equal("hello", Ok("cat", pool, "vol/g"));
        AssertFails(ExitCodes.Usage, "volume rename", "mv", pool, "vol", "vol2");

        AssertFails(ExitCodes.Error, "not empty (use -r)", "rm", pool, "vol/a");
        AssertFails(ExitCodes.Usage, "volume delete", "rm", pool, "vol");
        Assert.Equal(0, RunBinary(RandomBytes(100 * K, 7), "write", pool, "vol/a/b/c/deep", "0").Code);
        Ok("rm", pool, "vol/a", "-r");
        Ok("rm", pool, "vol/g");
        Assert.Empty(Json(Ok("ls", pool, "vol", "--json")).EnumerateArray());
        Assert.Equal(0UL, Du(pool, "vol").Total);
        AssertFails(ExitCodes.NotFound, "no such file", "rm", pool, "vol/g");
        AssertCheckClean(pool);
    }

    [Fact]
    public void WriteCatTruncateAndPunchWorkOnBytes()
    {
        string pool = NewPool("vol");
        var first = RandomBytes(10_000, 8);
        Assert.Equal(0, RunBinary(first, "write", pool, "vol/f", "0").Code);
        Assert.Equal(0, RunBinary("tail"u8.ToArray(), "write", pool, "vol/f", "1M").Code);
        var content = Cat(pool, "vol/f");
        Assert.Equal(M + 4, content.Length);
        Assert.Equal(first, content[..first.Length]);
        Assert.All(content[first.Length..M], b => Assert.Equal(0, b));
        Assert.Equal("tail"u8.ToArray(), content[M..]);
        Assert.True(Json(Ok("stat", pool, "vol/f", "--json")).GetProperty("data_bytes").GetInt64() <= 4 * 4096);

        // pwrite in the middle of existing data.
        Assert.Equal(0, RunBinary("XY"u8.ToArray(), "write", pool, "vol/f", "100").Code);
        content = Cat(pool, "vol/f");
        Assert.Equal((byte)'X', content[100]);
        Assert.Equal(first[102], content[102]);

        Ok("punch", pool, "vol/f", "0", "8K");
        content = Cat(pool, "vol/f");
        Assert.Equal(M + 4, content.Length);
        Assert.All(content[..8192], b => Assert.Equal(0, b));
        Assert.Equal(first[8192..], content[8192..first.Length]);

        Ok("truncate", pool, "vol/f", "9000");
        Assert.Equal(first[8192..9000], Cat(pool, "vol/f")[8192..]);
        Ok("truncate", pool, "vol/new", "1G");
        Assert.Equal(1UL << 30, Json(Ok("stat", pool, "vol/new", "--json")).GetProperty("size").GetUInt64());
        Assert.Equal(0UL, Du(pool, "vol/new").Total);

        // An empty stdin still creates the file.
        Assert.Equal(0, RunBinary([], "write", pool, "vol/empty", "0").Code);
        Assert.Empty(Cat(pool, "vol/empty"));

        // A read-only snapshot refuses every change, with one clear line.
        Ok("snapshot", pool, "vol", "ro", "--readonly");
        var r = RunBinary("x"u8.ToArray(), "write", pool, "ro/f", "0");
        Assert.Equal(ExitCodes.Error, r.Code);
        Assert.Equal("cowfish write: volume 'ro' is a read-only snapshot", r.Err.Trim());
        AssertFails(ExitCodes.Error, "read-only snapshot", "truncate", pool, "ro/f", "0");
        AssertFails(ExitCodes.Error, "read-only snapshot", "punch", pool, "ro/f", "0", "4K");
        AssertFails(ExitCodes.Error, "read-only snapshot", "rm", pool, "ro/f");
        AssertFails(ExitCodes.Error, "read-only snapshot", "cp", pool, "vol/f", "ro/g");
        AssertFails(ExitCodes.Error, "read-only snapshot", "import", pool, SparseHostFile("h", 10, (0, [1, 2, 3])), "ro/f");
        Assert.Equal(first[8192..9000], Cat(pool, "ro/f")[8192..]);

        // Without a stdin stream (the plain TextWriter overload) write is a usage error.
        AssertFails(ExitCodes.Usage, "standard input", "write", pool, "vol/f", "0");
        AssertCheckClean(pool);
    }

    [Fact]
    public void CloneRangeSharesBlocksAndDedupeSharesOnlyEqualBytes()
    {
        string pool = NewPool("vol");
        var data = RandomBytes(256 * K, 9);
        string host = Path.Combine(_dir, "d.bin");
        File.WriteAllBytes(host, data);
        Ok("import", pool, host, "vol/a");
        Ok("import", pool, host, "vol/b");
        Assert.Equal(0UL, Du(pool, "vol/b").Shared);

        Assert.Equal($"deduped {128 * K} bytes", Ok("dedupe", pool, "vol/a", "0", "128K", "vol/b", "0").Trim());
        Assert.Equal(128UL * K, Du(pool, "vol/b").Shared);
        var j = Json(Ok("dedupe", pool, "vol/a", "128K", "128K", "vol/b", "128K", "--json"));
        Assert.True(j.GetProperty("deduped").GetBoolean());
        Assert.Equal(128 * K, j.GetProperty("bytes").GetInt64());
        Assert.Equal(256UL * K, Du(pool, "vol/b").Shared);
        Assert.Equal(data, Cat(pool, "vol/b"));

        // Different bytes: exit 0, "differs", nothing shared.
        Assert.Equal("differs", Ok("dedupe", pool, "vol/a", "0", "4K", "vol/b", "4K").Trim());
        j = Json(Ok("dedupe", pool, "vol/a", "0", "4K", "vol/b", "4K", "--json"));
        Assert.False(j.GetProperty("deduped").GetBoolean());
        Assert.Equal(0, j.GetProperty("bytes").GetInt64());

        // clone-range into a new file at an offset: a hole before it, then A's bytes, all shared.
        Ok("clone-range", pool, "vol/a", "64K", "64K", "vol/c", "128K");
        var c = Cat(pool, "vol/c");
        Assert.Equal(192 * K, c.Length);
        Assert.All(c[..(128 * K)], x => Assert.Equal(0, x));
        Assert.Equal(data[(64 * K)..(128 * K)], c[(128 * K)..]);
        Assert.Equal((64UL * K, 0UL), (Du(pool, "vol/c").Total, Du(pool, "vol/c").Exclusive));

        // A misaligned range is refused, and leaves no empty file behind.
        AssertFails(ExitCodes.Error, "multiples of 4096", "clone-range", pool, "vol/a", "100", "4K", "vol/d", "0");
        Assert.Equal(ExitCodes.NotFound, Run("stat", pool, "vol/d").Code);
        AssertFails(ExitCodes.Usage, "LENGTH", "clone-range", pool, "vol/a", "0", "4Q", "vol/d", "0");
        AssertFails(ExitCodes.Usage, "positive", "dedupe", pool, "vol/a", "0", "0", "vol/b", "0");
        AssertCheckClean(pool);
    }

    [Fact]
    public void ErrorsAreOneLineWithTheRightExitCode()
    {
        string missingPool = Path.Combine(_dir, "missing.pool");
        AssertFails(ExitCodes.Error, "does not exist", "ls", missingPool, "vol");
        AssertFails(ExitCodes.Error, "does not exist", "volume", "list", missingPool);

        string pool = NewPool("vol");
        AssertFails(ExitCodes.NotFound, "volume 'nope' does not exist", "ls", pool, "nope");
        var w = RunBinary("x"u8.ToArray(), "write", pool, "nope/f", "0");
        Assert.Equal(ExitCodes.NotFound, w.Code);
        Assert.Equal("cowfish write: volume 'nope' does not exist", w.Err.Trim());
        w = RunBinary("x"u8.ToArray(), "write", pool, "vol/no/f", "0");
        Assert.Equal(ExitCodes.NotFound, w.Code);
        Assert.Contains("no such file or directory", w.Err);
        AssertFails(ExitCodes.NotFound, "no such file", "cat", pool, "vol/missing");
        AssertFails(ExitCodes.NotFound, "no such file", "stat", pool, "vol/missing");
        AssertFails(ExitCodes.NotFound, "no such file", "export", pool, "vol/missing", Path.Combine(_dir, "x"));
        AssertFails(ExitCodes.NotFound, "no such file", "import", pool, Path.Combine(_dir, "no-such-host-file"), "vol/f");
        AssertFails(ExitCodes.NotFound, "no such directory", "export", pool, "vol", Path.Combine(_dir, "no", "dir", "x"));
        AssertFails(ExitCodes.NotFound, "does not exist", "du", pool, "nope");

        AssertFails(ExitCodes.Usage, "not a size", "write", pool, "vol/f", "12Q");
        AssertFails(ExitCodes.Usage, "not a size", "truncate", pool, "vol/f", "-1");
        AssertFails(ExitCodes.Usage, "not a size", "punch", pool, "vol/f", "0", "lots");
        AssertFails(ExitCodes.Usage, "OFFSET", "write", pool, "vol/f", "");
        AssertFails(ExitCodes.Usage, "missing argument", "import", pool, "host");
        AssertFails(ExitCodes.Usage, "too many arguments", "cat", pool, "vol/a", "vol/b");
        AssertFails(ExitCodes.Usage, "unknown option --json", "cat", pool, "vol/a", "--json");
        AssertFails(ExitCodes.Usage, "too many arguments", "du", pool, "vol", "vol");
        AssertFails(ExitCodes.Usage, "the pool itself", "export", pool, "vol/f", pool);

        Ok("mkdir", pool, "vol/d");
        AssertFails(ExitCodes.Error, "not a regular file", "cat", pool, "vol/d");
        w = RunBinary("x"u8.ToArray(), "write", pool, "vol/d", "0");
        Assert.Equal(ExitCodes.Error, w.Code);
        Assert.Equal("cowfish write: vol/d: not a regular file", w.Err.Trim());
        AssertFails(ExitCodes.Error, "is a directory", "import", pool, _dir, "vol/f");
        // Failed commands changed nothing.
        Assert.Single(Json(Ok("ls", pool, "vol", "--json")).EnumerateArray());
        AssertCheckClean(pool);
    }

    [Fact]
    public void ProgressIsDrawnOnStderrOnlyWhenStderrIsATerminal()
    {
        string pool = NewPool("vol");
        string host = Path.Combine(_dir, "p.bin");
        File.WriteAllBytes(host, RandomBytes(3 * M, 11));
        var o = new StringWriter();
        var e = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["import", pool, host, "vol/p"], new Io(o, e, ShowProgress: true)));
        string err = e.ToString();
        Assert.StartsWith("\rimport [", err);
        Assert.Contains("MB/s", err);
        Assert.EndsWith("\r", err);
        Assert.DoesNotContain("\n", err);
        Assert.StartsWith("imported", o.ToString());
        Assert.Single(o.ToString().TrimEnd().Split('\n'));
        AssertCheckClean(pool);
    }

    [Fact]
    public void HelpListsAndExplainsEveryNewVerb()
    {
        string help = Ok("--help");
        string[] verbs = ["volume", "snapshot", "import", "export", "write", "cat", "ls", "stat", "mkdir", "rm", "mv", "cp",
            "clone-range", "dedupe", "du", "truncate", "punch"];
        foreach (var verb in verbs)
        {
            Assert.Contains($"  {verb} ", help);
            string h = Ok(verb, "--help");
            Assert.StartsWith($"usage: cowfish {verb}", h);
        }
        Assert.Contains("volume delete POOL NAME", Ok("volume", "--help"));
        Assert.Contains("VOLUME/dir/file", help);
    }

    [Fact]
    public void TheRealProcessPipesStdinAndBinaryStdout()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "Cowfish.Cli.dll");
        Assert.True(File.Exists(dll), dll);
        (int Code, byte[] Out, string Err) Exec(byte[]? stdin, params string[] a)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
            psi.ArgumentList.Add(dll);
            foreach (var x in a) psi.ArgumentList.Add(x);
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            var output = new MemoryStream();
            var copy = p.StandardOutput.BaseStream.CopyToAsync(output);
            if (stdin is not null) p.StandardInput.BaseStream.Write(stdin);
            p.StandardInput.Close();
            copy.Wait();
            p.WaitForExit();
            return (p.ExitCode, output.ToArray(), err.Result);
        }
        string pool = Path.Combine(_dir, "proc.pool");
        Assert.Equal(0, Exec(null, "mkfs", pool).Code);
        Assert.Equal(0, Exec(null, "volume", "create", pool, "vol").Code);

        // Bytes that are not UTF-8 go through stdin and stdout untouched.
        var bytes = RandomBytes(300 * K, 10);
        var w = Exec(bytes, "write", pool, "vol/bin", "0");
        Assert.True(w.Code == 0, w.Err);
        var cat = Exec(null, "cat", pool, "vol/bin");
        Assert.Equal(0, cat.Code);
        Assert.Equal(bytes, cat.Out);

        // Import and export; stderr is redirected, so no progress bar appears.
        string host = SparseHostFile("proc.bin", 4 * M, (M, bytes));
        var imp = Exec(null, "import", pool, host, "vol/img");
        Assert.Equal(0, imp.Code);
        Assert.Equal("", imp.Err);
        Assert.StartsWith("imported", Encoding.UTF8.GetString(imp.Out));
        string outFile = Path.Combine(_dir, "proc.out");
        Assert.Equal(0, Exec(null, "export", pool, "vol/img", outFile).Code);
        Assert.Equal(File.ReadAllBytes(host), File.ReadAllBytes(outFile));

        var missing = Exec(null, "cat", pool, "vol/none");
        Assert.Equal(ExitCodes.NotFound, missing.Code);
        Assert.Equal("cowfish cat: vol/none: no such file or directory", missing.Err.Trim());
        var check = Exec(null, "check", pool);
        Assert.Equal(0, check.Code);
        Assert.StartsWith("clean", Encoding.UTF8.GetString(check.Out));
    }
}
