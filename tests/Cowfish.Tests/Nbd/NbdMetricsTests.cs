using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Cowfish.Checking;
using Cowfish.Files;
using Cowfish.Nbd;
using Xunit;
using Xunit.Abstractions;
using static Cowfish.Tests.Nbd.RawNbdClient;

namespace Cowfish.Tests.Nbd;

/// <summary>
/// The instruments of the meter <c>Cowfish</c>, read the way dotnet-counters or OpenTelemetry read
/// them (a <see cref="MeterListener"/>), after NBD traffic against an in-process server; and the
/// proof that recording them, and a request's phases, allocates nothing.
/// </summary>
public sealed class NbdMetricsTests(ITestOutputHelper output)
{
    /// <summary>
    /// Sums what the meter publishes, by instrument and <c>type</c> tag. Once a series exists,
    /// taking a measurement allocates nothing, so the allocation test can listen through it.
    /// </summary>
    private sealed class Totals : IDisposable
    {
        private readonly MeterListener _listener = new();
        // Guards _series: measurements arrive on every thread that records.
        private readonly object _gate = new();
        private readonly Dictionary<(string Name, object? Type), (long Count, double Sum, double Last)> _series = new();

        public Totals()
        {
            _listener.InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == "Cowfish") l.EnableMeasurementEvents(instrument);
            };
            _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
            _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
            _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => Add(i, v, tags));
            _listener.Start();
        }

        private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            object? type = null;
            foreach (var t in tags)
                if (t.Key == "type") type = t.Value;
            lock (_gate)
            {
                ref var s = ref CollectionsMarshal.GetValueRefOrAddDefault(_series, (instrument.Name, type), out _);
                s = (s.Count + 1, s.Sum + value, value);
            }
        }

        public (long Count, double Sum, double Last) this[string name, string? type = null]
        {
            get { lock (_gate) return _series.GetValueOrDefault((name, type)); }
        }

        /// <summary>Runs the callbacks of the observable instruments (the mapping-queue gauge).</summary>
        public void Observe() => _listener.RecordObservableInstruments();

        public override string ToString()
        {
            lock (_gate) return string.Join('\n', _series.OrderBy(kv => kv.Key.Name).Select(kv => $"{kv.Key.Name} {kv.Key.Type}: {kv.Value}"));
        }

        public void Dispose() => _listener.Dispose();
    }

    [Fact]
    public async Task InstrumentsPublishAfterNbdTraffic()
    {
        string dir = Directory.CreateTempSubdirectory("cowfish-nbdmetrics-").FullName;
        string pool = Path.Combine(dir, "p.pool"), socket = Path.Combine(dir, "nbd.sock");
        var log = new ConcurrentQueue<string>();
        try
        {
            using (var setup = FileSystem.Create(pool))
            {
                setup.CreateVolume("vm");
                setup.CreateFile("vm/disk.img");
                setup.Truncate("vm/disk.img", 1 << 20);
                setup.Write("vm/disk.img", 0, new byte[64 * 1024]);
            }
            // Reopened, so the node cache starts empty and the first reads miss.
            using var fs = FileSystem.Open(pool);
            // Listening from here: what the instruments report below is this test's traffic (and
            // whatever other tests do meanwhile), not the setup's.
            using var totals = new Totals();
            var server = new NbdServer(fs, new NbdServerOptions { Log = log.Enqueue });
            try
            {
                server.ListenUnix(socket);
                await using var c = await RawNbdClient.ConnectUnixAsync(socket);
                await c.GoAsync("vm/disk.img", blockStatus: true);
                const int writes = 8;
                var data = new byte[4096];
                new Random(3).NextBytes(data);

                // Holding the writer lock keeps the write-back mappings queued: the gauge must see them.
                using (var hold = fs.Pool.BeginWrite())
                {
                    for (int i = 0; i < writes; i++)
                        Assert.Equal(0u, (await c.CallAsync(CmdWrite, (ulong)i * 4096, 4096, data)).Error);
                    totals.Observe();
                    Assert.True(totals["cowfish.mapping_queue.depth"].Last >= writes, totals.ToString());
                }
                for (int i = 0; i < writes; i++)
                    Assert.Equal(data, (await c.CallAsync(CmdRead, (ulong)i * 4096, 4096)).Data);
                Assert.Equal(0u, (await c.CallAsync(CmdWrite, 65536, 4096, data, FlagFua)).Error);
                Assert.Equal(0u, (await c.CallAsync(CmdFlush, 0, 0)).Error);
                Assert.Equal(0u, (await c.CallAsync(CmdTrim, 0, 4096)).Error);
                Assert.Equal(0u, (await c.CallAsync(CmdWriteZeroes, 4096, 4096)).Error);
                Assert.Equal(0u, (await c.CallAsync(CmdBlockStatus, 0, 1 << 20)).Error);
                await c.DisconnectAsync();
                // A worker counts a request just after sending its reply: stopping joins the workers.
                server.Stop();
                int requests = 2 * writes + 5;

                output.WriteLine(totals.ToString());
                // Other tests may serve at the same time, so every count is at least ours.
                Assert.True(totals["cowfish.nbd.requests", "write"].Sum >= writes + 1, totals.ToString());
                Assert.True(totals["cowfish.nbd.requests", "read"].Sum >= writes, totals.ToString());
                foreach (var type in new[] { "flush", "trim", "write_zeroes", "block_status" })
                    Assert.True(totals["cowfish.nbd.requests", type].Sum >= 1, $"no {type} request counted\n{totals}");
                Assert.True(totals["cowfish.nbd.written.bytes"].Sum >= (writes + 1) * 4096, totals.ToString());
                Assert.True(totals["cowfish.nbd.read.bytes"].Sum >= writes * 4096, totals.ToString());
                var latency = totals["cowfish.nbd.request.duration", "write"];
                Assert.True(latency.Count >= writes + 1 && latency.Sum > 0, totals.ToString());
                Assert.True(totals["cowfish.nbd.request.duration", "block_status"].Count >= 1, totals.ToString());
                Assert.True(totals["cowfish.commits"].Sum >= 2 && totals["cowfish.commit.duration"].Count >= 2, totals.ToString());
                Assert.True(totals["cowfish.flushes"].Sum >= 1 && totals["cowfish.flush.duration"].Sum > 0, totals.ToString());
                Assert.True(totals["cowfish.node_cache.hits"].Sum >= 1 && totals["cowfish.node_cache.misses"].Sum >= 1, totals.ToString());

                // This server's own count is exact.
                var stats = server.Stats();
                Assert.Equal(requests, stats.Requests);
                Assert.True(stats.AllocatedBytes > 0 && stats.BytesPerRequest == stats.AllocatedBytes / requests, stats.ToString());
            }
            finally { server.Stop(); }
            var report = PoolChecker.Check(fs.Pool);
            Assert.True(report.IsClean, string.Join('\n', report.Faults));
        }
        finally
        {
            output.WriteLine("--- server log\n" + string.Join('\n', log));
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void RecordingPhasesAndInstrumentsAllocatesNothing()
    {
        // Listening, as dotnet-counters would: the instruments are enabled and every value is delivered.
        using var totals = new Totals();
        var phases = new PhaseRecorder();
        var cache = new ConcurrentDictionary<ulong, string> { [1] = "node" };
        void Once()
        {
            long start = phases.Start();
            using (PhaseRecorder.Enter(Phase.Lock))
            using (PhaseRecorder.Enter(Phase.Map))
                PhaseRecorder.Mark(Phase.Commit);
            PhaseRecorder.Mark(Phase.Reply);
            long done = phases.Stop();
            NbdMetrics.Answered(NbdProtocol.CmdWrite, 4096, failed: false, start, done);
            NbdMetrics.Answered(NbdProtocol.CmdRead, 4096, failed: false, start, done);
            Instruments.Committed(start);
            Instruments.Flushed(start);
            Instruments.NodeCacheLookup(cache, 1UL, out _);
            Instruments.NodeCacheLookup(cache, 2UL, out _);
            // And with nothing recording: the engine's marks do nothing.
            using (PhaseRecorder.Enter(Phase.Cow)) PhaseRecorder.Mark(Phase.Flush);
        }
        for (int i = 0; i < 2000; i++) Once();
        long before = GC.GetAllocatedBytesForCurrentThread();
        const int rounds = 20_000;
        for (int i = 0; i < rounds; i++) Once();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated == 0, $"{allocated} bytes allocated over {rounds} rounds");
        // The listener did receive them all (so the measured path is the one that delivers values).
        Assert.True(totals["cowfish.nbd.requests", "write"].Count >= rounds, totals.ToString());
        Assert.True(totals["cowfish.nbd.request.duration", "read"].Count >= rounds, totals.ToString());
        Assert.True(totals["cowfish.node_cache.misses"].Count >= rounds, totals.ToString());
        Assert.False(PhaseRecorder.Active);
    }
}
