namespace Corral.IntegrationTests;
