using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Cowfish.Transactions;

namespace Cowfish.Cli;

/// <summary>
/// Runs cowfish verbs for other processes while <c>cowfish serve</c> holds the pool: each client
/// connection carries one command line, which runs here, in-process, on the served pool, with its
/// standard streams relayed over the socket. The verb is the same code as when it runs alone, so the
/// output and exit codes are the same. Every verb ends with a flush, as it would by closing the pool.
/// </summary>
internal sealed class ControlServer : IDisposable
{
    private readonly Pool _pool;
    private readonly string _poolPath;
    private readonly Socket _listener;
    private readonly Thread _acceptor;
    private readonly Action<string> _log;
    // Guards _running; Dispose waits on it for commands in progress.
    private readonly object _gate = new();
    private int _running;
    private bool _closed;

    public ControlServer(Pool pool, string poolPath, Action<string> log)
    {
        _pool = pool;
        _poolPath = Path.GetFullPath(poolPath);
        _log = log;
        SocketPath = ControlChannel.SocketPath(poolPath);
        Nbd.NbdServer.RemoveStaleSocket(SocketPath);
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        _listener.Listen(16);
        _acceptor = new Thread(Accept) { IsBackground = true, Name = "control-accept" };
        _acceptor.Start();
    }

    public string SocketPath { get; }

    private void Accept()
    {
        while (true)
        {
            Socket client;
            try { client = _listener.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
            lock (_gate)
            {
                if (_closed)
                {
                    client.Dispose();
                    return;
                }
                _running++;
            }
            new Thread(() =>
            {
                try { Serve(client); }
                finally
                {
                    lock (_gate)
                    {
                        _running--;
                        Monitor.PulseAll(_gate);
                    }
                }
            }) { IsBackground = true, Name = "control-client" }.Start();
        }
    }

    private sealed record Request(string[] Argv, string Cwd, bool Progress, bool OutTerminal);

    private void Serve(Socket client)
    {
        using var _ = client;
        using var stream = new NetworkStream(client, ownsSocket: false);
        try
        {
            var frame = ControlChannel.Read(stream);
            if (frame is not { Type: ControlChannel.Request } f) return;
            var req = JsonSerializer.Deserialize<Request>(f.Payload, Cli.Json);
            if (req?.Argv is null || req.Cwd is null) return;
            _log($"control: {string.Join(' ', req.Argv.Take(8))}");
            var outStream = new FrameStream(stream, ControlChannel.Stdout, buffered: true);
            var errStream = new FrameStream(stream, ControlChannel.Stderr, buffered: false);
            var utf8 = new UTF8Encoding(false);
            using var outWriter = new StreamWriter(outStream, utf8, 4096) { AutoFlush = true };
            using var errWriter = new StreamWriter(errStream, utf8, 1024) { AutoFlush = true };
            var io = new Io(outWriter, errWriter, new RemoteStdin(stream), outStream, req.Progress, req.OutTerminal,
                new ServedPoolAccess(_pool, _poolPath, req.Cwd), req.Cwd);
            int code = Cli.Run(req.Argv, io);
            try { _pool.Flush(); }
            catch (CowfishException e)
            {
                errWriter.WriteLine($"cowfish: {e.Message}");
                code = code == ExitCodes.Ok ? ExitCodes.Error : code;
            }
            outWriter.Flush();
            outStream.Send();
            Span<byte> c = stackalloc byte[4];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(c, code);
            ControlChannel.Write(stream, ControlChannel.Exit, c);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or JsonException)
        {
            _log($"control: client went away or sent a bad request: {e.Message}");
        }
    }

    /// <summary>
    /// Stops accepting and lets the commands in progress finish (for at most a minute, so that a
    /// client that never sends its stdin cannot hold the server up forever).
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_closed) return;
            _closed = true;
        }
        _listener.Dispose();
        _acceptor.Join();
        lock (_gate)
        {
            if (_running > 0) _log($"control: waiting for {_running} command(s) in progress");
            var deadline = DateTime.UtcNow.AddMinutes(1);
            while (_running > 0 && DateTime.UtcNow < deadline) Monitor.Wait(_gate, 200);
        }
        try { File.Delete(SocketPath); }
        catch (IOException) { }
    }

    /// <summary>A write-only stream that sends what is written as frames of one type.</summary>
    private sealed class FrameStream(Stream inner, byte type, bool buffered) : Stream
    {
        private readonly MemoryStream _pending = new();

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            lock (inner)
            {
                _pending.Write(buffer);
                if (!buffered || _pending.Length >= 64 * 1024) SendLocked();
            }
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        // StreamWriter flushes after every write with AutoFlush; a buffered stream sends only when full or at Send.
        public override void Flush()
        {
            if (!buffered) Send();
        }

        public void Send()
        {
            lock (inner) SendLocked();
        }

        private void SendLocked()
        {
            if (_pending.Length == 0) return;
            ControlChannel.Write(inner, type, _pending.GetBuffer().AsSpan(0, (int)_pending.Length));
            _pending.SetLength(0);
        }

        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>The client's stdin, fetched on demand: each read asks for up to that many bytes.</summary>
    private sealed class RemoteStdin(Stream inner) : Stream
    {
        private bool _eof;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (_eof || buffer.IsEmpty) return 0;
            Span<byte> want = stackalloc byte[4];
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(want, Math.Min(buffer.Length, 1 << 20));
            lock (inner) ControlChannel.Write(inner, ControlChannel.StdinWanted, want);
            var frame = ControlChannel.Read(inner);
            if (frame is not { Type: ControlChannel.Stdin } f || f.Payload.Length > buffer.Length)
                throw new IOException("control client sent no stdin data");
            if (f.Payload.Length == 0) _eof = true;
            f.Payload.CopyTo(buffer);
            return f.Payload.Length;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
