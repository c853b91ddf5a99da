using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Cowfish.Files;

namespace Cowfish.Nbd;

/// <summary>
/// An NBD server over the files of one pool: fixed newstyle handshake, structured replies,
/// base:allocation block status, pipelined requests answered out of order, and multi-conn (every
/// connection shares one engine, so a flush on any of them covers the writes acknowledged on all).
/// Listen on TCP, on a Unix socket, or serve one connection over a pair of streams (stdin/stdout).
/// </summary>
public sealed class NbdServer : IDisposable
{
    private readonly List<Socket> _listeners = new();
    private readonly List<Thread> _acceptors = new();
    // Guards _connections and _nextId.
    private readonly object _gate = new();
    private readonly HashSet<NbdConnection> _connections = new();
    private readonly HashSet<Thread> _connectionThreads = new();
    private int _nextId;
    private volatile bool _stopping;
    private bool _stopped;
    private readonly NbdServeBaseline _baseline = new();

    public NbdServer(FileSystem fs, NbdServerOptions? options = null)
    {
        FileSystem = fs;
        Options = options ?? new NbdServerOptions();
        Exports = new NbdExports(fs, Options);
        Workers = new NbdWorkers(Options.Workers);
        SlowLogTicks = Options.SlowLog is { } slow ? (long)(Math.Max(0, slow.TotalSeconds) * Stopwatch.Frequency) : -1;
        NbdMetrics.Register(this);
    }

    public FileSystem FileSystem { get; }
    public NbdServerOptions Options { get; }
    internal NbdExports Exports { get; }
    internal NbdWorkers Workers { get; }
    internal bool Stopping => _stopping;

    /// <summary>Requests slower than this many Stopwatch ticks are logged with their phases; -1 for none.</summary>
    internal long SlowLogTicks { get; }

    /// <summary>Requests answered and what serving them cost the process, since the first request.</summary>
    public NbdServeStats Stats() => _baseline.Now();

    internal NbdServeBaseline Baseline => _baseline;

    /// <summary>Connections open now.</summary>
    public int ConnectionCount
    {
        get { lock (_gate) return _connections.Count; }
    }

    internal void Log(string line) => Options.Log?.Invoke(line);

    /// <summary>Listens on a TCP endpoint; returns the bound endpoint (port 0 picks a free port).</summary>
    public IPEndPoint ListenTcp(IPEndPoint endpoint)
    {
        var s = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        s.Bind(endpoint);
        s.Listen(64);
        StartAccepting(s, tcp: true);
        return (IPEndPoint)s.LocalEndPoint!;
    }

    /// <summary>Listens on a Unix socket at <paramref name="path"/>, replacing a stale socket file.</summary>
    public void ListenUnix(string path)
    {
        RemoveStaleSocket(path);
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        s.Listen(64);
        StartAccepting(s, tcp: false);
    }

    /// <summary>
    /// Serves clients that connect to a socket already listening, such as one inherited through
    /// systemd socket activation (the way libnbd's <c>[ CMD ]</c> and nbdkit start a server).
    /// </summary>
    public void Listen(Socket listener) => StartAccepting(listener, tcp: listener.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6);

    /// <summary>
    /// The listening sockets passed by systemd socket activation (<c>LISTEN_PID</c> naming this
    /// process, <c>LISTEN_FDS</c> sockets from fd 3), or none.
    /// </summary>
    public static IReadOnlyList<Socket> InheritedSockets()
    {
        if (Environment.GetEnvironmentVariable("LISTEN_PID") is not { } pid || pid != Environment.ProcessId.ToString()) return [];
        if (!int.TryParse(Environment.GetEnvironmentVariable("LISTEN_FDS"), out int count) || count is < 1 or > 64) return [];
        var result = new List<Socket>();
        for (int fd = 3; fd < 3 + count; fd++) result.Add(new Socket(new SafeSocketHandle(fd, ownsHandle: true)));
        // Children must not inherit them again.
        Environment.SetEnvironmentVariable("LISTEN_PID", null);
        Environment.SetEnvironmentVariable("LISTEN_FDS", null);
        return result;
    }

    /// <summary>
    /// Deletes a socket file nobody listens on (left by a server that was killed); refuses to take
    /// over one that a live server still answers on.
    /// </summary>
    internal static void RemoveStaleSocket(string path)
    {
        if (!File.Exists(path)) return;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            File.Delete(path);
            return;
        }
        throw new InvalidRequestException($"{path} is in use by a running server");
    }

    private void StartAccepting(Socket listener, bool tcp)
    {
        lock (_gate)
        {
            _listeners.Add(listener);
            var t = new Thread(() => AcceptLoop(listener, tcp)) { IsBackground = true, Name = "nbd-accept" };
            _acceptors.Add(t);
            t.Start();
        }
    }

    private void AcceptLoop(Socket listener, bool tcp)
    {
        while (!_stopping)
        {
            Socket client;
            try { client = listener.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
            if (tcp) client.NoDelay = true;
            string peer = tcp ? client.RemoteEndPoint?.ToString() ?? "tcp" : "unix";
            var stream = new NetworkStream(client, ownsSocket: false);
            Start(stream, stream, client, peer);
        }
    }

    private void Start(Stream input, Stream output, Socket? socket, string peer)
    {
        if (Register(input, output, socket, peer) is not { } c) return;
        var t = new Thread(() => RunConnection(c)) { IsBackground = true, Name = "nbd-conn" };
        lock (_gate) _connectionThreads.Add(t);
        t.Start();
    }

    /// <summary>A new connection, counted; null (and the socket closed) once the server is stopping.</summary>
    private NbdConnection? Register(Stream input, Stream output, Socket? socket, string peer)
    {
        lock (_gate)
        {
            if (_stopping)
            {
                socket?.Dispose();
                return null;
            }
            var c = new NbdConnection(this, input, output, socket, $"[{++_nextId}] {peer}");
            _connections.Add(c);
            return c;
        }
    }

    private void RunConnection(NbdConnection c)
    {
        Log($"{c.Peer}: connected");
        c.Run();
        Log($"{c.Peer}: closed");
        lock (_gate)
        {
            _connections.Remove(c);
            _connectionThreads.Remove(Thread.CurrentThread);
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Serves one connection over a pair of streams (for example stdin and stdout, the way nbdkit -s
    /// does) on the calling thread, and returns when the client disconnects.
    /// </summary>
    public void Serve(Stream input, Stream output, string peer = "stdio")
    {
        if (Register(input, output, null, peer) is { } c) RunConnection(c);
    }

    /// <summary>
    /// Stops accepting, lets every request in flight finish and be answered (new ones get
    /// ESHUTDOWN), closes the connections, and makes everything acknowledged durable.
    /// </summary>
    public void Stop()
    {
        lock (_gate)
        {
            if (_stopped) return;
            _stopped = true;
            _stopping = true;
            foreach (var l in _listeners)
            {
                // shutdown() wakes a thread blocked in accept() on Linux; close() alone may not
                // (an inherited socket is in blocking mode).
                try { l.Shutdown(SocketShutdown.Both); }
                catch (SocketException) { }
                l.Dispose();
            }
            foreach (var c in _connections) c.StopReading();
        }
        foreach (var t in _acceptors) t.Join();
        lock (_gate)
        {
            // Stream connections (stdio) end when their client does; socket ones end now.
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (_connectionThreads.Count > 0 && DateTime.UtcNow < deadline) Monitor.Wait(_gate, 100);
        }
        Workers.Dispose();
        NbdMetrics.Unregister(this);
        FileSystem.Flush();
    }

    public void Dispose() => Stop();
}
