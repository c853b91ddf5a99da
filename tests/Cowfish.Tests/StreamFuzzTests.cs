using System.Buffers.Binary;
using Cowfish.Files;
using Cowfish.Streams;
using Cowfish.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace Cowfish.Tests;

/// <summary>
/// Damaged streams: flipped bytes, truncation, records repeated, swapped or dropped. Every one is
/// refused with an <see cref="InvalidStreamException"/> that names an offset inside the stream, and
/// the receiving pool shows nothing of it and checks clean.
/// </summary>
public sealed class StreamFuzzTests(ITestOutputHelper output)
{
    /// <summary>Offsets of the records of a well-formed stream (after the 16-byte header).</summary>
    internal static List<(int Offset, int Length)> Records(byte[] s)
    {
        var list = new List<(int, int)>();
        int at = 16;
        while (at < s.Length)
        {
            int len = 20 + (int)BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(at));
            list.Add((at, len));
            at += len;
        }
        return list;
    }

    private static byte[] Mutate(byte[] s, Random rng, out string what)
    {
        var recs = Records(s);
        switch (rng.Next(6))
        {
            case 0:
            {
                var m = s.ToArray();
                int i = rng.Next(m.Length);
                m[i] ^= (byte)(1 << rng.Next(8));
                what = $"flip a bit of byte {i}";
                return m;
            }
            case 1:
            {
                int n = rng.Next(s.Length);
                what = $"truncate to {n} bytes";
                return s[..n];
            }
            case 2:
            {
                var (o, l) = recs[rng.Next(recs.Count)];
                what = $"repeat the record at {o}";
                return [.. s[..(o + l)], .. s[o..(o + l)], .. s[(o + l)..]];
            }
            case 3:
            {
                int i = rng.Next(recs.Count - 1);
                var (o1, l1) = recs[i];
                var (o2, l2) = recs[i + 1];
                what = $"swap the records at {o1} and {o2}";
                return [.. s[..o1], .. s[o2..(o2 + l2)], .. s[o1..(o1 + l1)], .. s[(o2 + l2)..]];
            }
            case 4:
            {
                var (o, l) = recs[rng.Next(recs.Count)];
                what = $"drop the record at {o}";
                return [.. s[..o], .. s[(o + l)..]];
            }
            default:
            {
                var m = s.ToArray();
                int n = rng.Next(1, 9);
                for (int k = 0; k < n; k++) m[rng.Next(m.Length)] = (byte)rng.Next(256);
                what = $"scribble {n} random bytes";
                return m.AsSpan().SequenceEqual(s) ? [.. m, 0] : m;
            }
        }
    }

    public static IEnumerable<object[]> SeedCases() => Seeds.For(2).Select(s => new object[] { s });

    [Theory]
    [MemberData(nameof(SeedCases))]
    public void DamagedStreamsAreRefusedAndChangeNothing(int seed)
    {
        Seeds.Announce(output, nameof(DamagedStreamsAreRefusedAndChangeNothing), seed);
        var rng = new Random(seed);
        using var a = SendReceiveTests.NewFs();
        using var b = SendReceiveTests.NewFs();
        SendReceiveTests.Populate(a, "v");
        a.Clone("v/d/a.bin", "v/clone");
        a.Snapshot("v", "s1", readOnly: true);
        var full = SendReceiveTests.Send(a, "s1");
        SendReceiveTests.Receive(b, full);
        a.Write("v/d/a.bin", 8192, SendReceiveTests.Bytes(20_000, 3));
        a.Rename("v/empty", "v/d/empty");
        a.SetXattr("v/clone", "user.z", [7]);
        a.Snapshot("v", "s2", readOnly: true);
        var incremental = SendReceiveTests.Send(a, "s2", "s1");
        var volumes = b.ListVolumes().Select(v => v.Name).Order().ToList();
        for (int i = 0; i < 60; i++)
        {
            var (stream, name) = i % 2 == 0 ? (full, "again") : (incremental, "s2");
            var bad = Mutate(stream, rng, out string what);
            string ctx = $"seed {seed}, case {i}: {what} of the {(i % 2 == 0 ? "full" : "incremental")} stream";
            // Half the cases apply in batches of two records, so some batches commit before the damage is found.
            bool small = rng.Next(2) == 0;
            var generation = b.Pool.CommittedGeneration;
            var e = Assert.Throws<InvalidStreamException>(() =>
                ReceiveStream.Apply(b, new MemoryStream(bad), new ReceiveOptions { Name = name, BatchRecords = small ? 2 : 4096 }));
            Assert.True(e.Offset >= 0 && e.Offset <= bad.Length, $"{ctx}: offset {e.Offset} outside the stream");
            Assert.Contains($"offset {e.Offset}", e.Message);
            Assert.Equal(volumes, b.ListVolumes().Select(v => v.Name).Order().ToList());
            if (ReceiveStream.Pending(b) is null) Assert.Equal(generation, b.Pool.CommittedGeneration);
            else Assert.True(ReceiveStream.Abort(b), ctx);
            Assert.Null(ReceiveStream.Pending(b));
            if (i % 10 == 9) TreeModel.AssertClean(b.Pool, ctx);
        }
        VolumeCompare.AssertSame(a, "s1", b, "s1", "after the damaged streams");
        SendReceiveTests.Receive(b, incremental);
        VolumeCompare.AssertSame(a, "s2", b, "s2", "the good stream still applies");
        TreeModel.AssertClean(b.Pool, "at the end");
    }

    [Fact]
    public void BadHeadersAndOversizedLengthsNameTheirOffset()
    {
        using var a = SendReceiveTests.NewFs();
        using var b = SendReceiveTests.NewFs();
        SendReceiveTests.Populate(a, "v");
        a.Snapshot("v", "s1", readOnly: true);
        var s = SendReceiveTests.Send(a, "s1");
        var bad = s.ToArray();
        bad[0] = (byte)'X';
        Assert.Equal(0, Assert.Throws<InvalidStreamException>(() => SendReceiveTests.Receive(b, bad)).Offset);
        bad = s.ToArray();
        bad[8] = 2; // version 2
        Assert.Contains("version 2", Assert.Throws<InvalidStreamException>(() => SendReceiveTests.Receive(b, bad)).Message);
        // A record length of 4 GiB − 1 is refused before anything is read or allocated for it.
        var recs = Records(s);
        bad = s.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(recs[2].Offset), uint.MaxValue);
        var e = Assert.Throws<InvalidStreamException>(() => SendReceiveTests.Receive(b, bad));
        Assert.Equal(recs[2].Offset, e.Offset);
        Assert.Contains("over the limit", e.Message);
        // An unknown record type with a correct checksum.
        bad = s.ToArray();
        var (o, l) = recs[1];
        BinaryPrimitives.WriteUInt16LittleEndian(bad.AsSpan(o + 4), 999);
        BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(o + 16), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(bad.AsSpan(o + 16), Cowfish.Format.Crc32C.Compute(bad.AsSpan(o, l)));
        e = Assert.Throws<InvalidStreamException>(() => SendReceiveTests.Receive(b, bad));
        Assert.Equal(o, e.Offset);
        Assert.Contains("unknown record type 999", e.Message);
        // Trailing bytes after the end record.
        e = Assert.Throws<InvalidStreamException>(() => SendReceiveTests.Receive(b, [.. s, 1, 2, 3]));
        Assert.Equal(s.Length, e.Offset);
        Assert.Empty(b.ListVolumes());
        TreeModel.AssertClean(b.Pool, "after bad headers");
    }
}
