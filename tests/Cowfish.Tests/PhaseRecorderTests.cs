using System.Diagnostics;
using Xunit;

namespace Cowfish.Tests;

/// <summary>The per-thread phase recorder behind the slow-request log.</summary>
public sealed class PhaseRecorderTests
{
    private static void Spin(double ms)
    {
        long until = Stopwatch.GetTimestamp() + (long)(ms * Stopwatch.Frequency / 1000);
        while (Stopwatch.GetTimestamp() < until) { }
    }

    private static double Ms(long ticks) => ticks * 1000.0 / Stopwatch.Frequency;

    [Fact]
    public void NestedScopesChargeTheirOwnPhaseAndReturnToTheEnclosingOne()
    {
        var r = new PhaseRecorder();
        long start = r.Start();
        Assert.True(PhaseRecorder.Active);
        r.Add(Phase.Queued, Stopwatch.Frequency / 1000); // 1 ms measured before the thread took the request
        using (PhaseRecorder.Enter(Phase.Cow))
        {
            Spin(2);
            using (PhaseRecorder.Enter(Phase.Map))
            {
                Spin(3);
                using (PhaseRecorder.Enter(Phase.Commit)) Spin(1);
                Spin(1); // back in map
            }
            Spin(2); // back in cow
        }
        Spin(1); // back in other
        PhaseRecorder.Mark(Phase.Reply);
        Spin(1);
        long done = r.Stop();
        Assert.False(PhaseRecorder.Active);

        Assert.Equal(Stopwatch.Frequency / 1000, r[Phase.Queued]);
        Assert.True(Ms(r[Phase.Cow]) >= 4, $"cow {Ms(r[Phase.Cow])}");
        Assert.True(Ms(r[Phase.Map]) >= 4, $"map {Ms(r[Phase.Map])}");
        Assert.True(Ms(r[Phase.Commit]) >= 1, $"commit {Ms(r[Phase.Commit])}");
        Assert.True(Ms(r[Phase.Other]) >= 1, $"other {Ms(r[Phase.Other])}");
        Assert.True(Ms(r[Phase.Reply]) >= 1, $"reply {Ms(r[Phase.Reply])}");
        Assert.Equal(0, r[Phase.Lock] + r[Phase.Read] + r[Phase.Flush] + r[Phase.Recv]);
        // Every tick between start and stop is charged once: nothing lost, nothing counted twice.
        long sum = Enum.GetValues<Phase>().Sum(p => r[p]);
        Assert.Equal(done - start + Stopwatch.Frequency / 1000, sum);
    }

    [Fact]
    public void MarksWithoutARecorderDoNothing()
    {
        Assert.False(PhaseRecorder.Active);
        using (PhaseRecorder.Enter(Phase.Lock)) PhaseRecorder.Mark(Phase.Flush);
        // A recorder started afterwards begins clean, in Other.
        var r = new PhaseRecorder();
        r.Start();
        Spin(0.2);
        r.Stop();
        Assert.True(r[Phase.Other] > 0);
        Assert.Equal(0, r[Phase.Lock] + r[Phase.Flush]);
        // And a second request on the same recorder does not inherit the first one's phases.
        long start = r.Start();
        using (PhaseRecorder.Enter(Phase.Read)) Spin(0.2);
        long done = r.Stop();
        Assert.True(r[Phase.Read] > 0);
        Assert.Equal(done - start, Enum.GetValues<Phase>().Sum(p => r[p]));
    }
}
