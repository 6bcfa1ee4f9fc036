// Log Analytics workspace, workspace-based Application Insights, and the saved queries
// (infra/queries/*.kql) as a query pack that shows up under Logs > Queries.

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Name of the query pack holding the saved operator queries.')
param queryPackName string

@description('Region of the monitoring resources.')
param location string

@description('Tags for the monitoring resources.')
param tags object = {}

@description('Days the workspace keeps logs.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Principal (the app identity) that sends telemetry with Entra ID authentication.')
param telemetryPublisherPrincipalId string

// Built-in role: Monitoring Metrics Publisher.
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    // Telemetry is accepted only with an Entra ID token (the app sends it with its identity,
    // see APPLICATIONINSIGHTS_AUTHENTICATION_STRING), so the instrumentation key inside the
    // connection string is a locator, not a credential.
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, telemetryPublisherPrincipalId, subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId))
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId) // Monitoring Metrics Publisher
    principalId: telemetryPublisherPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The queries are written in the classic Application Insights schema (traces, exceptions,
// requests, customDimensions), which the workspace-based component translates to AppTraces,
// AppExceptions, AppRequests and their Properties: run them from the Application Insights
// resource's Logs blade. The dimensions come from the app's own log export (shared/telemetry.py).
var savedQueries = [
  {
    key: 'invoice-history'
    displayName: 'ml-connector: what happened to invoice X'
    description: 'Every log line of one ERP record and of the correlation ids it started, across functions, oldest first.'
    body: loadTextContent('../queries/invoice-history.kql')
  }
  {
    key: 'failures-last-24h'
    displayName: 'ml-connector: what failed in the last 24 hours'
    description: 'Failed audit steps and provider statuses, dead-lettered messages, exceptions and failed runs, grouped by connection, step and reason.'
    body: loadTextContent('../queries/failures-last-24h.kql')
  }
]

resource queryPack 'Microsoft.OperationalInsights/queryPacks@2019-09-01' = {
  name: queryPackName
  location: location
  tags: tags
  properties: {}
}

resource queries 'Microsoft.OperationalInsights/queryPacks/queries@2019-09-01' = [for query in savedQueries: {
  parent: queryPack
  name: guid(queryPack.id, query.key)
  properties: {
    displayName: query.displayName
    description: query.description
    body: query.body
    related: {
      categories: [
        'applications'
      ]
      resourceTypes: [
        'microsoft.insights/components'
      ]
    }
    tags: {
      labels: [
        'ml-connector'
      ]
    }
  }
}]

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
// Not a secret in the Key Vault sense: it locates the component; with local authentication
// disabled above, its instrumentation key grants no write access, not even to telemetry.
output appInsightsConnectionString string = appInsights.properties.ConnectionString
output queryPackName string = queryPack.name
