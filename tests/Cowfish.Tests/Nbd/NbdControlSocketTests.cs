using System.Text;
using Cowfish.Transactions;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// While <c>cowfish serve</c> holds a pool, other cowfish commands on it go through its control
/// socket, and must behave exactly as they do on a pool nobody serves.
/// </summary>
[Collection(NbdProcessCollection.Name)]
public sealed class NbdControlSocketTests(ITestOutputHelper output)
{
    /// <summary>Every verb the issue names, with its stdin, including ones that must fail (exit 3 and 4).</summary>
    private static readonly (string[] Args, string? Stdin)[] Script =
    [
        (["ls", "p.pool", "vm"], null),
        (["stat", "p.pool", "vm/a.img"], null),
        (["cat", "p.pool", "vm/a.img"], null),
        (["write", "p.pool", "vm/b.img", "4096"], "written through the control socket\n"),
        (["cat", "p.pool", "vm/b.img"], null),
        (["cp", "p.pool", "vm/a.img", "vm/c.img"], null),
        (["snapshot", "p.pool", "vm", "snap", "--readonly"], null),
        (["ls", "p.pool", "snap"], null),
        (["cat", "p.pool", "snap/c.img"], null),
        (["stat", "p.pool", "vm/missing.img"], null),
        (["cat", "p.pool", "vm/missing.img"], null),
        (["ls", "p.pool", "novolume"], null),
        (["write", "p.pool", "snap/x.img", "0"], "refused\n"),
        (["cp", "p.pool", "vm/missing.img", "vm/d.img"], null),
        (["check", "p.pool"], null),
    ];

    private static async Task<ToolResult> Cowfish(string cwd, string[] args, string? stdin) =>
        await Tool.RunAsync(ServedPool.DotnetHost, [ServedPool.CliDll, .. args], TimeSpan.FromSeconds(60),
            stdin is null ? null : Encoding.UTF8.GetBytes(stdin), cwd);

    private static string NoGeneration(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"generation \d+", "generation N");

    [Fact]
    public async Task VerbsThroughTheServerMatchVerbsRunAlone()
    {
        using var p = ServedPool.Create(output, "vm");
        var setup = await Cowfish(p.Dir, ["write", "p.pool", "vm/a.img", "0"], "the original image\n");
        Assert.True(setup.Code == 0, setup.ToString());
        // The same pool, byte for byte, where nobody serves it (same file name, so outputs match).
        string alone = Path.Combine(p.Dir, "alone");
        Directory.CreateDirectory(alone);
        File.Copy(p.PoolPath, Path.Combine(alone, "p.pool"));

        await p.StartAsync();
        // The server holds the pool: opening it directly must fail, so whatever works below went
        // through the control socket.
        Assert.ThrowsAny<Exception>(() => Pool.Open(p.PoolPath).Dispose());

        var codes = new List<int>();
        foreach (var (args, stdin) in Script)
        {
            var served = await Cowfish(p.Dir, args, stdin);
            var direct = await Cowfish(alone, args, stdin);
            output.WriteLine($"cowfish {string.Join(' ', args)}: served exit {served.Code}, alone exit {direct.Code}\n{served.Out}{served.Err}");
            Assert.True(served.Code == direct.Code, $"exit codes differ:\nserved: {served}\nalone: {direct}");
            // The generation counts commits, and the server groups its commits differently from a
            // command run alone; it is the one figure allowed to differ.
            Assert.True(NoGeneration(served.Out) == NoGeneration(direct.Out), $"stdout differs:\nserved: {served}\nalone: {direct}");
            Assert.True(served.Err == direct.Err, $"stderr differs:\nserved: {served}\nalone: {direct}");
            codes.Add(served.Code);
        }
        // The script means what it says: the failures failed the way the exit codes promise.
        Assert.Equal([0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 4, 3, 0], codes);

        // What the verbs did is visible to NBD clients of the same server at once.
        var list = await Tool.RunAsync("nbdinfo", "--list", p.UnixUri(""));
        Assert.True(list.Code == 0, list.ToString());
        foreach (var e in new[] { "vm/a.img", "vm/b.img", "vm/c.img", "snap/c.img" }) Assert.Contains($"export=\"{e}\"", list.Out);
        await p.StopAsync();
        p.AssertCheckClean();
        Assert.Equal("the original image\n", ServedPool.Cli("cat", p.PoolPath, "vm/c.img"));
    }
    [Fact]
    public async Task RemovingAnExportedFileThroughTheServerFailsItsRequestsCleanly()
    {
        using var p = ServedPool.Create(output, "vm");
        ServedPool.Cli("truncate", p.PoolPath, "vm/x.img", "1M");
        await p.StartAsync();
        await using var c = await RawNbdClient.ConnectUnixAsync(p.Socket);
        await c.GoAsync("vm/x.img");
        Assert.Equal(0u, (await c.CallAsync(RawNbdClient.CmdWrite, 0, 4096, new byte[4096], RawNbdClient.FlagFua)).Error);
        // In-process, this goes through the control socket: the server process holds the pool.
        var rm = Support.CliHarness.Run("rm", p.PoolPath, "vm/x.img");
        Assert.True(rm.Code == 0, rm.Err);
        // The file is gone: its export answers EIO, and nothing it does may leak into the pool.
        Assert.Equal(RawNbdClient.EIO, (await c.CallAsync(RawNbdClient.CmdWrite, 8192, 4096, new byte[4096])).Error);
        Assert.Equal(RawNbdClient.EIO, (await c.CallAsync(RawNbdClient.CmdRead, 0, 4096)).Error);
        Assert.Equal(RawNbdClient.EIO, (await c.CallAsync(RawNbdClient.CmdWriteZeroes, 0, 8192)).Error);
        Assert.Equal(0u, (await c.CallAsync(RawNbdClient.CmdFlush, 0, 0)).Error);
        await c.DisconnectAsync();
        await p.StopAsync();
        p.AssertCheckClean();
        Assert.Single(p.LogLines("WRITE at 8192+4096 failed:"));
    }
}
