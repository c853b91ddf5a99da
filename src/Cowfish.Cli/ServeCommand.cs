using System.Net;
using System.Runtime.InteropServices;
using Cowfish.Files;
using Cowfish.Nbd;

namespace Cowfish.Cli;

/// <summary>
/// <c>cowfish serve</c>: holds the pool, serves its files over NBD, and runs other cowfish
/// commands on it through the control socket (<c>POOL.ctl</c>) until SIGINT or SIGTERM.
/// </summary>
internal static class ServeCommand
{
    public static readonly Command Command = new("serve",
        "serve POOL [--listen HOST:PORT] [--socket PATH] [--stdio] [--read-only] [--create SIZE] [--slow-log MS]",
        "Serve the pool's files as NBD exports named VOLUME/PATH until SIGINT or SIGTERM.", Serve,
        Flags: ["--read-only", "--stdio", "-s"], Options: ["--listen", "--socket", "--create", "--workers", "--slow-log"], Details: Help, PoolArgument: -1);

    private const string Help = """

        Listens on 127.0.0.1:10809 unless --listen, --socket or --stdio says otherwise (--listen and
        --socket may be given together). --stdio (or -s) serves one client on stdin/stdout and exits
        when it disconnects. Files in read-only snapshots are exported read-only; --read-only exports
        every file read-only. --create SIZE makes a missing export a sparse file of SIZE bytes.
        --slow-log MS logs every request slower than MS milliseconds (0: every request), from its
        header read to its reply written, with the time it spent in each phase (recv, queued, lock,
        read, cow, map, commit, flush, reply, other).

        While it runs, every other cowfish command on POOL is carried out by this server through the
        control socket POOL.ctl, with the same output and exit codes. Each refused request and each
        connection is logged to stderr as one line. On SIGINT or SIGTERM the server answers the
        requests in flight, makes every acknowledged write durable, prints one "stats:" line
        (requests, bytes allocated, collections, GC pause since the first request) and exits 0.
        Counters and histograms are on the meter "Cowfish" (dotnet-counters monitor --counters Cowfish).

        """;

    private static int Serve(Args a, Io io)
    {
        a.Expect(1, "POOL");
        string poolPath = io.HostPath(a.Positional[0]);
        bool stdio = a.Has("--stdio", "-s");
        long? create = a.Option("--create") is { } c ? Args.ParseSize(c) : null;
        int workers = a.Option("--workers") is { } w ? (int.TryParse(w, out int n) && n is > 0 and <= 1024 ? n : throw new UsageException("--workers takes 1..1024")) : NbdServerOptions.DefaultWorkers;
        TimeSpan? slowLog = a.Option("--slow-log") is { } sl ? ParseMilliseconds(sl) : null;
        IPEndPoint? tcp = a.Option("--listen") is { } l ? ParseEndpoint(l) : null;
        string? unix = a.Option("--socket") is { } s ? io.HostPath(s) : null;
        if (stdio && (tcp is not null || unix is not null)) throw new UsageException("--stdio serves one client on stdin/stdout; it does not listen");
        // Socket activation (systemd, or libnbd's `[ CMD ]`): serve on the inherited sockets.
        var inherited = stdio ? [] : NbdServer.InheritedSockets();
        if (!stdio && tcp is null && unix is null && inherited.Count == 0) tcp = new IPEndPoint(IPAddress.Loopback, 10809);
        if (stdio && io.In is null) throw new UsageException("--stdio needs standard input");

        var errGate = new object();
        void Log(string line)
        {
            lock (errGate) io.Err.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} cowfish serve: {line}");
        }

        using var fs = io.Pools.OpenFiles(poolPath);
        // Background collections only while serving: a blocking full collection would stall every client.
        System.Runtime.GCSettings.LatencyMode = System.Runtime.GCLatencyMode.SustainedLowLatency;
        var options = new NbdServerOptions { ReadOnly = a.Has("--read-only"), CreateSize = create, Log = Log, Workers = workers, SlowLog = slowLog };
        var server = new NbdServer(fs, options);
        var control = new ControlServer(fs.Pool, poolPath, Log);
        using var stop = new ManualResetEventSlim();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        void Stop(PosixSignalContext ctx)
        {
            ctx.Cancel = true;
            Log($"{ctx.Signal}: stopping");
            stop.Set();
        }

        try
        {
            foreach (var socket in inherited)
            {
                server.Listen(socket);
                Log($"listening on an inherited socket ({socket.AddressFamily})");
            }
            if (tcp is not null) Log($"listening on {server.ListenTcp(tcp)}");
            if (unix is not null)
            {
                server.ListenUnix(unix);
                Log($"listening on unix:{unix}");
            }
        }
        catch (Exception e)
        {
            control.Dispose();
            server.Stop();
            if (e is System.Net.Sockets.SocketException) throw new InvalidRequestException($"cannot listen: {e.Message}");
            throw;
        }
        Log($"control socket {control.SocketPath}");
        if (stdio)
        {
            var stdout = io.BinaryOut ?? throw new UsageException("--stdio needs standard output");
            var t = new Thread(() =>
            {
                server.Serve(io.In!, stdout);
                stop.Set();
            }) { IsBackground = true, Name = "nbd-stdio" };
            t.Start();
        }
        stop.Wait();
        // Commands running for control clients finish first (they use the pool), then NBD clients.
        control.Dispose();
        server.Stop();
        fs.Flush();
        Log(server.Stats().ToString());
        Log("stopped; every acknowledged write is durable");
        return ExitCodes.Ok;
    }

    private static TimeSpan ParseMilliseconds(string text) =>
        double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double ms) && ms is >= 0 and <= 86_400_000
            ? TimeSpan.FromMilliseconds(ms)
            : throw new UsageException($"--slow-log takes milliseconds (0 or more), not '{text}'");

    private static IPEndPoint ParseEndpoint(string text)
    {
        int colon = text.LastIndexOf(':');
        string host = colon >= 0 ? text[..colon].Trim('[', ']') : text;
        string port = colon >= 0 ? text[(colon + 1)..] : "10809";
        if (!IPAddress.TryParse(host.Length == 0 ? "127.0.0.1" : host, out var ip))
            ip = host == "localhost" ? IPAddress.Loopback : throw new UsageException($"--listen: '{host}' is not an IP address");
        if (!int.TryParse(port, out int p) || p is < 0 or > 65535) throw new UsageException($"--listen: '{port}' is not a port");
        return new IPEndPoint(ip, p);
    }
}
