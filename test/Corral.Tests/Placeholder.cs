namespace Corral.Tests;
