using Cowfish.Cli;
using Cowfish.Files;
using Cowfish.Tests.Support;
using Xunit;

namespace Cowfish.Tests;

/// <summary><c>cowfish send</c> and <c>cowfish receive</c>: through files and through stdout/stdin, full, incremental, refused, interrupted, resumed, aborted.</summary>
public sealed class CliStreamTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cowfish-clistream-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    private static (int Code, string Out, string Err) Run(params string[] args) => CliHarness.Run(args);

    private static (int Code, string Out, string Err, byte[] Bin) RunIo(byte[]? stdin, params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        using var input = new MemoryStream(stdin ?? []);
        using var output = new MemoryStream();
        int code = Cli.Cli.Run(args, new Io(o, e, input, output));
        return (code, o.ToString(), e.ToString(), output.ToArray());
    }

    private static string Ok(params string[] args)
    {
        var r = Run(args);
        Assert.True(r.Code == 0, $"cowfish {string.Join(' ', args)} exited {r.Code}: {r.Err}");
        return r.Out;
    }

    private void Source(string pool, int bytes = 700_000)
    {
        Ok("mkfs", pool);
        Ok("volume", "create", pool, "v");
        string host = P("host.bin");
        File.WriteAllBytes(host, SendReceiveTests.Bytes(bytes, 1));
        Ok("import", pool, host, "v/a");
        Ok("cp", pool, "v/a", "v/b");
        Ok("mkdir", pool, "v/d");
        Ok("snapshot", pool, "v", "s1", "--readonly");
    }

    private static void AssertSameVolume(string poolA, string va, string poolB, string vb)
    {
        using var a = FileSystem.Open(poolA);
        if (poolA == poolB) { VolumeCompare.AssertSame(a, va, a, vb); return; }
        using var b = FileSystem.Open(poolB);
        VolumeCompare.AssertSame(a, va, b, vb);
    }

    [Fact]
    public void FullAndIncrementalThroughFilesAndPipes()
    {
        string a = P("a.pool"), b = P("b.pool");
        Source(a);
        Ok("mkfs", b);
        // Full, through a file.
        var send = Run("send", a, "s1", "-o", P("s1.stream"));
        Assert.Equal(0, send.Code);
        Assert.Contains("sent s1", send.Err);
        Assert.Contains("received s1", Ok("receive", b, "-i", P("s1.stream")));
        AssertSameVolume(a, "s1", b, "s1");
        using (var doc = System.Text.Json.JsonDocument.Parse(Ok("volume", "list", b, "--json")))
        using (var src = System.Text.Json.JsonDocument.Parse(Ok("volume", "list", a, "--json")))
        {
            var s1Id = src.RootElement.EnumerateArray().Single(v => v.GetProperty("name").GetString() == "s1").GetProperty("id").GetGuid();
            var got = doc.RootElement.EnumerateArray().Single().GetProperty("received_from").GetGuid();
            Assert.Equal(s1Id, got);
        }
        // Incremental, through stdout and stdin.
        Assert.Equal(0, RunIo(SendReceiveTests.Bytes(100, 5), "write", a, "v/a", "8192").Code);
        File.WriteAllBytes(P("patch"), SendReceiveTests.Bytes(5000, 2));
        Ok("import", a, P("patch"), "v/d/new");
        Ok("mv", a, "v/b", "v/d/b");
        Ok("snapshot", a, "v", "s2", "--readonly");
        var s = RunIo(null, "send", a, "s2", "--parent", "s1");
        Assert.Equal(0, s.Code);
        Assert.True(s.Bin.Length < 100_000, $"incremental stream of {s.Bin.Length} bytes");
        var r = RunIo(s.Bin, "receive", b);
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("incremental", r.Out);
        AssertSameVolume(a, "s2", b, "s2");
        // Into the same pool under a new name.
        Ok("receive", a, "-i", P("s1.stream"), "--name", "copy");
        AssertSameVolume(a, "s1", a, "copy");
        Assert.Equal(0, Run("check", a).Code);
        Assert.Equal(0, Run("check", b).Code);
    }

    [Fact]
    public async Task SendPipedIntoReceiveBetweenRealProcesses()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "Cowfish.Cli.dll");
        Assert.True(File.Exists(dll), dll);
        string a = P("a.pool"), b = P("b.pool");
        Source(a);
        Ok("mkfs", b);
        // The shell joins the two processes with a real pipe: binary stdout into binary stdin.
        var psi = new System.Diagnostics.ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"dotnet '{dll}' send '{a}' s1 | dotnet '{dll}' receive '{b}'; echo \"rc=${{PIPESTATUS[0]}},${{PIPESTATUS[1]}}\"");
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string o = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        Assert.Contains("rc=0,0", o + await stderr);
        Assert.Contains("received s1", o);
        AssertSameVolume(a, "s1", b, "s1");
        Assert.Equal(0, Run("check", b).Code);
    }

    [Fact]
    public void RefusalsHaveClearErrorsAndExitCodes()
    {
        string a = P("a.pool"), b = P("b.pool");
        Source(a);
        Ok("mkfs", b);
        var w = Run("send", a, "v", "-o", P("x"));
        Assert.Equal(ExitCodes.Error, w.Code);
        Assert.Contains("not a read-only snapshot", w.Err);
        Assert.False(File.Exists(P("x")), "a failed send leaves no file behind");
        Assert.Equal(ExitCodes.NotFound, Run("send", a, "nope", "-o", P("x")).Code);
        Assert.Equal(ExitCodes.Usage, Run("send", a).Code);
        Assert.Equal(ExitCodes.Usage, Run("send", a, "s1").Code); // no binary stdout in-process
        Assert.Equal(ExitCodes.NotFound, Run("receive", b, "-i", P("missing")).Code);
        // An incremental whose parent is missing on the receiver.
        Ok("snapshot", a, "v", "s2", "--readonly");
        Ok("send", a, "s2", "--parent", "s1", "-o", P("inc"));
        var r = Run("receive", b, "-i", P("inc"));
        Assert.Equal(ExitCodes.Error, r.Code);
        Assert.Contains("not on this pool", r.Err);
        Assert.Equal(0, Run("check", b).Code);
        Assert.Equal(0, Run("check", a).Code);
    }

    [Fact]
    public void InterruptedReceiveResumesOrAbortsFromTheCommandLine()
    {
        string a = P("a.pool"), b = P("b.pool");
        Source(a, 16 << 20); // more than one 8 MiB batch, so that a cut leaves something to resume
        Ok("mkfs", b);
        Ok("send", a, "s1", "-o", P("s1.stream"));
        var full = File.ReadAllBytes(P("s1.stream"));
        File.WriteAllBytes(P("cut"), full[..(full.Length - 10)]);
        // A damaged stream: exit 4, the offset named, nothing listed.
        var bad = full.ToArray();
        bad[100] ^= 1;
        File.WriteAllBytes(P("bad"), bad);
        var e = Run("receive", b, "-i", P("bad"));
        Assert.Equal(ExitCodes.Error, e.Code);
        Assert.Matches("offset [0-9]+", e.Err);
        Assert.Equal(ExitCodes.NotFound, Run("receive", "--token", b).Code);

        // A cut stream: exit 4, a token, resume.
        var cut = RunIo(full[..(full.Length * 3 / 4)], "receive", b);
        Assert.Equal(ExitCodes.Error, cut.Code);
        Assert.Contains("truncated", cut.Err);
        Assert.Contains("--abort", cut.Err);
        string token = Ok("receive", "--token", b).Trim();
        Assert.StartsWith("cowfish-resume-1:", token);
        Assert.DoesNotContain("s1", Run("volume", "list", b).Out);
        Ok("send", "--resume", token, a, "s1", "-o", P("rest"));
        Assert.True(new FileInfo(P("rest")).Length < full.Length * 0.6, "the resumed stream repeats what was received");
        Ok("receive", b, "-i", P("rest"));
        AssertSameVolume(a, "s1", b, "s1");

        // Abort.
        Ok("snapshot", a, "v", "s2", "--readonly");
        var big = P("big.bin");
        File.WriteAllBytes(big, SendReceiveTests.Bytes(20 << 20, 3));
        Ok("import", a, big, "v/big");
        Ok("snapshot", a, "v", "s3", "--readonly");
        Ok("send", a, "s3", "--parent", "s1", "-o", P("s3"));
        var s3 = File.ReadAllBytes(P("s3"));
        Assert.Equal(ExitCodes.Error, RunIo(s3[..(s3.Length - 5)], "receive", b).Code);
        Assert.Equal(0, Run("receive", "--token", b).Code);
        Assert.Contains("aborted", Ok("receive", "--abort", b));
        Assert.Equal(ExitCodes.NotFound, Run("receive", "--abort", b).Code);
        Assert.Equal(ExitCodes.NotFound, Run("receive", "--token", b).Code);
        Assert.Equal(0, Run("check", b).Code);
        Assert.Equal(0, Run("check", a).Code);
    }
}
